//! Walks pickle opcode streams without executing them, simulating just enough of the
//! unpickler's stack and memo to know which globals (`module.name`) a stream would import —
//! including imports built from memoised strings with `STACK_GLOBAL` — and flags the ones
//! that run code, touch the system or the network.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read};
use std::rc::Rc;

use crate::source::{Input, array, bytes};
use crate::{Finding, Severity};

/// Strings longer than this cannot be a module or attribute name; they are kept as opaque.
const MAX_NAME: u64 = 512;
/// Arguments of the text opcodes (protocol 0) are lines; longer lines are refused.
const MAX_LINE: usize = 64 * 1024;
/// Bounds on the simulated unpickler, so a hostile stream cannot exhaust memory.
const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 20;
/// Distinct imports listed in a report.
const MAX_IMPORTS: usize = 256;

#[derive(Clone)]
enum V {
    Mark,
    Str(Rc<str>),
    Other,
}

/// What a walk saw: findings, every distinct import, how many pickles, and why it stopped
/// early if it did.
#[derive(Default)]
pub struct Walk {
    pub findings: Vec<Finding>,
    pub imports: BTreeSet<String>,
    pub pickles: usize,
    pub error: Option<String>,
}

/// How dangerous importing `module.name` is, or `None` for ordinary classes and functions.
pub fn classify(module: &str, name: &str) -> Option<Severity> {
    const BUILTIN_CALLS: &[&str] = &[
        "eval",
        "exec",
        "execfile",
        "compile",
        "open",
        "breakpoint",
        "__import__",
        "getattr",
        "setattr",
        "delattr",
        "apply",
        "globals",
        "locals",
        "vars",
        "input",
    ];
    // Whole modules whose every callable can run commands, load code or reach the system.
    const CRITICAL_MODULES: &[&str] = &[
        "os",
        "nt",
        "posix",
        "subprocess",
        "_posixsubprocess",
        "runpy",
        "socket",
        "sys",
        "pty",
        "pickle",
        "_pickle",
        "cPickle",
        "dill",
        "bdb",
        "pdb",
        "shutil",
        "asyncio",
        "importlib",
        "code",
        "codeop",
        "ctypes",
        "multiprocessing",
        "marshal",
        "timeit",
        "commands",
        "popen2",
    ];
    const HIGH_MODULES: &[&str] = &[
        "webbrowser",
        "httplib",
        "http.client",
        "requests",
        "aiohttp",
        "urllib",
        "urllib2",
        "urllib3",
        "ftplib",
        "smtplib",
        "telnetlib",
        "xmlrpc",
        "socketserver",
        "pathlib",
        "cloudpickle",
    ];
    let under = |m: &str| module == m || module.strip_prefix(m).is_some_and(|rest| rest.starts_with('.'));
    if matches!(module, "builtins" | "__builtin__" | "__builtins__") {
        return BUILTIN_CALLS.contains(&name).then_some(Severity::Critical);
    }
    if CRITICAL_MODULES.iter().any(|m| under(m)) {
        return Some(Severity::Critical);
    }
    let critical_names: &[(&str, &[&str])] = &[
        ("operator", &["attrgetter", "methodcaller", "call"]),
        ("_operator", &["attrgetter", "methodcaller", "call"]),
        ("types", &["FunctionType", "CodeType", "LambdaType", "MethodType"]),
        ("platform", &["popen"]),
        ("numpy.testing._private.utils", &["runstring"]),
        ("torch.serialization", &["load"]),
        ("torch", &["load"]),
    ];
    if critical_names.iter().any(|(m, names)| module == *m && names.contains(&name)) {
        return Some(Severity::Critical);
    }
    if matches!((module, name), ("io" | "_io", "open" | "FileIO" | "open_code")) {
        return Some(Severity::High);
    }
    if HIGH_MODULES.iter().any(|m| under(m)) {
        return Some(Severity::High);
    }
    None
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

struct Machine {
    stack: Vec<V>,
    /// Memo slots in use, with the string each holds (if it holds one). Its length is the
    /// index `MEMOIZE` uses, as in the unpickler.
    memo: HashMap<u64, Option<Rc<str>>>,
    /// The memo outgrew what we keep: later lookups may miss a name.
    memo_overflow: bool,
}

impl Machine {
    fn new() -> Self {
        Self { stack: Vec::new(), memo: HashMap::new(), memo_overflow: false }
    }

    fn push(&mut self, v: V) -> io::Result<()> {
        if self.stack.len() >= MAX_STACK {
            return Err(bad("the pickle stack grows past the scanner's limit"));
        }
        self.stack.push(v);
        Ok(())
    }

    fn pop(&mut self) -> io::Result<V> {
        match self.stack.pop() {
            Some(V::Mark) | None => Err(bad("stack underflow")),
            Some(v) => Ok(v),
        }
    }

    fn pop_n(&mut self, n: usize) -> io::Result<()> {
        for _ in 0..n {
            self.pop()?;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> io::Result<Vec<V>> {
        let at = self.stack.iter().rposition(|v| matches!(v, V::Mark)).ok_or_else(|| bad("no mark on the stack"))?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&self) -> io::Result<V> {
        match self.stack.last() {
            Some(V::Mark) | None => Err(bad("stack underflow")),
            Some(v) => Ok(v.clone()),
        }
    }

    fn put(&mut self, idx: u64) -> io::Result<()> {
        let value = match self.top()? {
            V::Str(s) => Some(s),
            _ => None,
        };
        if self.memo.len() < MAX_MEMO || self.memo.contains_key(&idx) {
            self.memo.insert(idx, value);
        } else {
            self.memo_overflow = true;
        }
        Ok(())
    }

    fn get(&mut self, idx: u64) -> io::Result<()> {
        let v = match self.memo.get(&idx) {
            Some(Some(s)) => V::Str(s.clone()),
            _ => V::Other,
        };
        self.push(v)
    }
}

fn line(r: &mut dyn Input) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        r.read_exact(&mut b)?;
        if b[0] == b'\n' {
            return Ok(out);
        }
        if out.len() >= MAX_LINE {
            return Err(bad("a text argument is longer than the scanner's limit"));
        }
        out.push(b[0]);
    }
}

fn line_str(r: &mut dyn Input) -> io::Result<String> {
    let l = line(r)?;
    let s = String::from_utf8_lossy(&l);
    Ok(s.trim_end_matches('\r').to_string())
}

fn line_int(r: &mut dyn Input) -> io::Result<u64> {
    let s = line_str(r)?;
    s.trim().parse().map_err(|_| bad(format!("bad memo index {s:?}")))
}

/// A protocol-0 `STRING` argument: a Python string literal in quotes.
fn unquote(raw: &str) -> Option<String> {
    let b = raw.as_bytes();
    if b.len() >= 2 && (b[0] == b'\'' || b[0] == b'"') && b[b.len() - 1] == b[0] {
        Some(raw[1..raw.len() - 1].to_string())
    } else {
        None
    }
}

/// Reads a length-prefixed string; short ones become names, long ones are skipped.
fn counted_str(r: &mut dyn Input, n: u64, m: &mut Machine) -> io::Result<()> {
    if n <= MAX_NAME {
        let b = bytes(r, n, MAX_NAME, "a string")?;
        let v = match String::from_utf8(b) {
            Ok(s) => V::Str(Rc::from(s)),
            Err(_) => V::Other,
        };
        m.push(v)
    } else {
        r.skip(n)?;
        m.push(V::Other)
    }
}

fn skip_counted(r: &mut dyn Input, n: u64, m: &mut Machine) -> io::Result<()> {
    r.skip(n)?;
    m.push(V::Other)
}

fn len_u32(r: &mut dyn Input) -> io::Result<u64> {
    Ok(u64::from(u32::from_le_bytes(array(r)?)))
}

fn len_u64(r: &mut dyn Input) -> io::Result<u64> {
    Ok(u64::from_le_bytes(array(r)?))
}

struct Walker<'a> {
    out: &'a mut Walk,
    entry: &'a str,
}

impl Walker<'_> {
    fn import(&mut self, module: &str, name: &str, offset: u64) {
        let full = format!("{module}.{name}");
        if self.out.imports.len() < MAX_IMPORTS {
            self.out.imports.insert(full.clone());
        }
        if let Some(severity) = classify(module, name)
            && !self.out.findings.iter().any(|f| f.rule == "pickle.unsafe_import" && f.subject == full)
        {
            self.out.findings.push(Finding {
                rule: "pickle.unsafe_import".into(),
                severity,
                message: format!("imports {full}, which can run code or reach the system when the file is loaded"),
                subject: full,
                location: Some(location(self.entry, offset)),
            });
        }
    }

    fn unresolved(&mut self, offset: u64, why: &str) {
        self.out.findings.push(Finding {
            rule: "pickle.unresolved_import".into(),
            severity: Severity::High,
            message: format!("imports a global whose name is not a constant ({why}); it cannot be checked"),
            subject: String::new(),
            location: Some(location(self.entry, offset)),
        });
    }

    fn extension(&mut self, offset: u64) {
        if !self.out.findings.iter().any(|f| f.rule == "pickle.extension_import") {
            self.out.findings.push(Finding {
                rule: "pickle.extension_import".into(),
                severity: Severity::Medium,
                message: "imports a global through the copyreg extension registry (EXT1/2/4); it cannot be checked"
                    .into(),
                subject: String::new(),
                location: Some(location(self.entry, offset)),
            });
        }
    }

    /// One pickle, from its first opcode to `STOP`.
    fn one(&mut self, r: &mut dyn Input) -> io::Result<()> {
        let mut m = Machine::new();
        loop {
            let at = r.position();
            let [op] = array::<1>(r).map_err(|e| eof_as(e, "the pickle ends without STOP"))?;
            match op {
                b'.' => return Ok(()),
                b'(' => m.push(V::Mark)?,
                b'0' => m.pop_n(1)?,
                b'1' => {
                    m.pop_mark()?;
                }
                b'2' => {
                    let v = m.top()?;
                    m.push(v)?;
                }
                // Text numbers and persistent ids.
                b'F' | b'I' | b'L' | b'P' => {
                    line(r)?;
                    m.push(V::Other)?;
                }
                b'S' => {
                    let s = line_str(r)?;
                    let v = unquote(&s).map_or(V::Other, |s| V::Str(Rc::from(s)));
                    m.push(v)?;
                }
                b'V' => {
                    let s = line_str(r)?;
                    m.push(V::Str(Rc::from(s)))?;
                }
                b'J' => {
                    r.skip(4)?;
                    m.push(V::Other)?;
                }
                b'K' => {
                    r.skip(1)?;
                    m.push(V::Other)?;
                }
                b'M' => {
                    r.skip(2)?;
                    m.push(V::Other)?;
                }
                b'G' => {
                    r.skip(8)?;
                    m.push(V::Other)?;
                }
                b'N' | b'}' | b']' | b')' | 0x88 | 0x89 | 0x8f | 0x97 => m.push(V::Other)?,
                b'Q' | 0x85 | 0x98 => {
                    m.pop()?;
                    m.push(V::Other)?;
                }
                b'R' | 0x81 => {
                    m.pop_n(2)?;
                    m.push(V::Other)?;
                }
                0x86 => {
                    m.pop_n(2)?;
                    m.push(V::Other)?;
                }
                0x87 | 0x92 => {
                    m.pop_n(3)?;
                    m.push(V::Other)?;
                }
                b'T' => {
                    let n = len_u32(r)?;
                    counted_str(r, n, &mut m)?;
                }
                b'U' => {
                    let [n] = array::<1>(r)?;
                    counted_str(r, u64::from(n), &mut m)?;
                }
                b'X' => {
                    let n = len_u32(r)?;
                    counted_str(r, n, &mut m)?;
                }
                0x8c => {
                    let [n] = array::<1>(r)?;
                    counted_str(r, u64::from(n), &mut m)?;
                }
                0x8d => {
                    let n = len_u64(r)?;
                    counted_str(r, n, &mut m)?;
                }
                b'B' => {
                    let n = len_u32(r)?;
                    skip_counted(r, n, &mut m)?;
                }
                b'C' => {
                    let [n] = array::<1>(r)?;
                    skip_counted(r, u64::from(n), &mut m)?;
                }
                0x8e | 0x96 => {
                    let n = len_u64(r)?;
                    skip_counted(r, n, &mut m)?;
                }
                0x8a => {
                    let [n] = array::<1>(r)?;
                    skip_counted(r, u64::from(n), &mut m)?;
                }
                0x8b => {
                    let n = len_u32(r)?;
                    skip_counted(r, n, &mut m)?;
                }
                b'a' | b'b' => m.pop_n(1)?,
                b's' => m.pop_n(2)?,
                b'e' | b'u' | 0x90 => {
                    m.pop_mark()?;
                }
                b'd' | b'l' | b't' | 0x91 => {
                    m.pop_mark()?;
                    m.push(V::Other)?;
                }
                b'o' => {
                    let items = m.pop_mark()?;
                    if items.is_empty() {
                        return Err(bad("OBJ without a class"));
                    }
                    m.push(V::Other)?;
                }
                b'c' => {
                    let module = line_str(r)?;
                    let name = line_str(r)?;
                    self.import(&module, &name, at);
                    m.push(V::Other)?;
                }
                b'i' => {
                    let module = line_str(r)?;
                    let name = line_str(r)?;
                    self.import(&module, &name, at);
                    m.pop_mark()?;
                    m.push(V::Other)?;
                }
                0x93 => {
                    let name = m.pop()?;
                    let module = m.pop()?;
                    match (module, name) {
                        (V::Str(module), V::Str(name)) => self.import(&module, &name, at),
                        _ if m.memo_overflow => self.unresolved(at, "the memo outgrew the scanner"),
                        _ => self.unresolved(at, "STACK_GLOBAL on values that are not strings"),
                    }
                    m.push(V::Other)?;
                }
                0x82 => {
                    r.skip(1)?;
                    self.extension(at);
                    m.push(V::Other)?;
                }
                0x83 => {
                    r.skip(2)?;
                    self.extension(at);
                    m.push(V::Other)?;
                }
                0x84 => {
                    r.skip(4)?;
                    self.extension(at);
                    m.push(V::Other)?;
                }
                b'g' => {
                    let idx = line_int(r)?;
                    m.get(idx)?;
                }
                b'h' => {
                    let [i] = array::<1>(r)?;
                    m.get(u64::from(i))?;
                }
                b'j' => {
                    let i = len_u32(r)?;
                    m.get(i)?;
                }
                b'p' => {
                    let idx = line_int(r)?;
                    m.put(idx)?;
                }
                b'q' => {
                    let [i] = array::<1>(r)?;
                    m.put(u64::from(i))?;
                }
                b'r' => {
                    let i = len_u32(r)?;
                    m.put(i)?;
                }
                0x94 => {
                    let idx = m.memo.len() as u64;
                    m.put(idx)?;
                }
                0x80 => {
                    let [proto] = array::<1>(r)?;
                    if proto > 5 {
                        return Err(bad(format!("unsupported pickle protocol {proto}")));
                    }
                }
                0x95 => {
                    r.skip(8)?;
                }
                other => return Err(bad(format!("unknown opcode 0x{other:02x}"))),
            }
        }
    }
}

fn eof_as(e: io::Error, msg: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof { bad(msg) } else { e }
}

fn location(entry: &str, offset: u64) -> String {
    if entry.is_empty() { format!("offset {offset}") } else { format!("{entry} at offset {offset}") }
}

/// Walks every pickle in `r`: the first one, then more as long as the next byte starts a
/// protocol-2+ pickle (legacy PyTorch files hold several, followed by raw tensor data).
pub fn walk(r: &mut dyn Input, entry: &str, out: &mut Walk) {
    let mut w = Walker { out, entry };
    if let Err(e) = w.one(r) {
        w.out.error = Some(format!("{}: {e}", location(entry, r.position())));
        return;
    }
    w.out.pickles += 1;
    loop {
        let start = r.position();
        let mut head = [0u8; 2];
        let mut got = 0;
        while got < 2 {
            match r.read(&mut head[got..]) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        if head[0] != 0x80 || !(2..=5).contains(&head[1]) {
            return;
        }
        // Put the PROTO opcode back in front, as part of the next pickle.
        let mut rest = Prefixed { head, at: 0, start, inner: r };
        if let Err(e) = w.one(&mut rest) {
            w.out.error = Some(format!("{}: {e}", location(entry, rest.position())));
            return;
        }
        w.out.pickles += 1;
    }
}

/// `inner` with two bytes already read put back in front.
struct Prefixed<'a> {
    head: [u8; 2],
    at: usize,
    start: u64,
    inner: &'a mut dyn Input,
}

impl Read for Prefixed<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at < 2 && !out.is_empty() {
            out[0] = self.head[self.at];
            self.at += 1;
            return Ok(1);
        }
        self.inner.read(out)
    }
}

impl Input for Prefixed<'_> {
    fn skip(&mut self, mut n: u64) -> io::Result<()> {
        while self.at < 2 && n > 0 {
            self.at += 1;
            n -= 1;
        }
        self.inner.skip(n)
    }
    fn position(&self) -> u64 {
        if self.at < 2 { self.start + self.at as u64 } else { self.inner.position() }
    }
}
