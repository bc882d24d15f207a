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
const MAX_MEMO: usize = 1 << 19;
/// Bytes of names the memo keeps; past it, slots are kept without their value.
const MAX_MEMO_BYTES: usize = 32 << 20;
/// Past this depth, names pushed on the stack are kept as opaque values, so a long list of
/// strings costs a slot each rather than its text (a name needed deeper than this makes the
/// import unresolved, which is a finding).
const DEEP_STACK: usize = 1 << 16;
/// Tuples and dicts are tracked (for joblib's array wrappers) only while this small.
const MAX_TRACKED: usize = 16;
/// Pickles nested in pickles (joblib object arrays) are walked this deep.
const MAX_NESTING: usize = 4;
/// Distinct imports listed in a report.
const MAX_IMPORTS: usize = 256;

/// What the simulated stack knows about a value: names, small numbers, and the few objects
/// whose meaning decides how the stream continues (joblib writes raw array bytes after a
/// `NumpyArrayWrapper`, sized by its shape and NumPy dtype).
#[derive(Clone)]
enum V {
    Mark,
    Str(Rc<str>),
    Int(i64),
    Global(Rc<str>, Rc<str>),
    Tuple(Rc<Vec<V>>),
    Dict(Rc<Vec<(Rc<str>, V)>>),
    /// A `numpy.dtype`: bytes per element, and whether elements are Python objects.
    Dtype {
        size: u64,
        object: bool,
    },
    /// A `joblib.numpy_pickle.NumpyArrayWrapper` before its state is set.
    Wrapper,
    Other,
}

impl V {
    fn memoisable(&self) -> bool {
        matches!(self, V::Str(_) | V::Global(..) | V::Dtype { .. })
    }
}

/// What follows a `BUILD` in the stream, outside the pickle opcodes.
enum After {
    Nothing,
    /// joblib: raw array bytes, after an optional padding-length byte and its padding.
    Raw {
        bytes: u64,
        padded: bool,
    },
    /// joblib: an object array, pickled as a nested stream.
    Nested,
}

fn dtype(args: &V) -> V {
    let V::Tuple(items) = args else { return V::Other };
    let Some(V::Str(s)) = items.first() else { return V::Other };
    let digits: String = s.chars().skip_while(|c| !c.is_ascii_digit()).take_while(char::is_ascii_digit).collect();
    V::Dtype { size: digits.parse().unwrap_or(0), object: s.starts_with('O') }
}

fn construct(callable: &V, args: &V) -> V {
    match callable {
        V::Global(m, n) if &**m == "numpy" && &**n == "dtype" => dtype(args),
        V::Global(m, n) if &**m == "joblib.numpy_pickle" && &**n == "NumpyArrayWrapper" => V::Wrapper,
        _ => V::Other,
    }
}

fn tuple(items: Vec<V>) -> V {
    if items.len() <= MAX_TRACKED && !items.iter().any(|v| matches!(v, V::Tuple(_) | V::Dict(_))) {
        V::Tuple(Rc::new(items))
    } else {
        V::Other
    }
}

fn field<'a>(d: &'a [(Rc<str>, V)], key: &str) -> Option<&'a V> {
    d.iter().rev().find(|(k, _)| &**k == key).map(|(_, v)| v)
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
    /// Memo slots in use, with the value each holds (if we track it). Its length is the
    /// index `MEMOIZE` uses, as in the unpickler.
    memo: HashMap<u64, Option<V>>,
    /// Bytes of the names in the memo.
    memo_bytes: usize,
    /// The memo outgrew what we keep: later lookups may miss a name.
    memo_overflow: bool,
}

impl Machine {
    fn new() -> Self {
        Self { stack: Vec::new(), memo: HashMap::new(), memo_bytes: 0, memo_overflow: false }
    }

    #[inline]
    fn push(&mut self, v: V) -> io::Result<()> {
        let depth = self.stack.len();
        if depth > DEEP_STACK {
            if depth >= MAX_STACK {
                return Err(bad("the pickle stack grows past the scanner's limit"));
            }
            if matches!(v, V::Str(_)) {
                self.stack.push(V::Other);
                return Ok(());
            }
        }
        self.stack.push(v);
        Ok(())
    }

    /// Pops everything down to and including the top mark, without keeping it.
    fn discard_mark(&mut self) -> io::Result<()> {
        let at = self.stack.iter().rposition(|v| matches!(v, V::Mark)).ok_or_else(|| bad("no mark on the stack"))?;
        self.stack.truncate(at);
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
        let top = self.top()?;
        let cost = match &top {
            V::Str(s) => s.len() + 32,
            V::Global(m, n) => m.len() + n.len() + 32,
            _ => 32,
        };
        let mut value = top.memoisable().then_some(top);
        if value.is_some() {
            if self.memo_bytes + cost > MAX_MEMO_BYTES {
                value = None;
                self.memo_overflow = true;
            } else {
                self.memo_bytes += cost;
            }
        }
        if self.memo.len() < MAX_MEMO || self.memo.contains_key(&idx) {
            self.memo.insert(idx, value);
        } else {
            self.memo_overflow = true;
        }
        Ok(())
    }

    fn get(&mut self, idx: u64) -> io::Result<()> {
        let v = match self.memo.get(&idx) {
            Some(Some(v)) => v.clone(),
            _ => V::Other,
        };
        self.push(v)
    }

    /// `SETITEM(S)`: adds string-keyed pairs to the dict on top, while it is small.
    fn set_items(&mut self, items: Vec<V>) -> io::Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("SETITEMS with an odd number of items"));
        }
        let top = self.stack.last_mut().ok_or_else(|| bad("stack underflow"))?;
        match top {
            V::Mark => return Err(bad("stack underflow")),
            V::Dict(d) => {
                let mut pairs = items.into_iter();
                while let (Some(k), Some(v)) = (pairs.next(), pairs.next()) {
                    match k {
                        V::Str(k) if d.len() < MAX_TRACKED && !matches!(v, V::Dict(_)) => Rc::make_mut(d).push((k, v)),
                        _ => {
                            *top = V::Other;
                            break;
                        }
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// `BUILD`: sets the state of the object on top; for joblib's array wrapper, says which
    /// raw bytes follow in the stream.
    fn build(&mut self, state: V) -> io::Result<After> {
        let top = self.stack.last_mut().ok_or_else(|| bad("stack underflow"))?;
        let after = match (&*top, &state) {
            (V::Mark, _) => return Err(bad("stack underflow")),
            (V::Dtype { size, object }, V::Tuple(t)) => {
                // (version, byte order, subarray, names, fields, elsize, alignment, flags)
                let elsize = match t.get(5) {
                    Some(V::Int(n)) if *n > 0 => *n as u64,
                    _ => *size,
                };
                let has_object = *object || matches!(t.get(7), Some(V::Int(f)) if f & 1 == 1);
                *top = V::Dtype { size: elsize, object: has_object };
                return Ok(After::Nothing);
            }
            (V::Wrapper, V::Dict(d)) => {
                let Some(V::Dtype { size, object }) = field(d, "dtype") else {
                    return Err(bad("a joblib array without a dtype"));
                };
                if *object {
                    After::Nested
                } else {
                    let count = match field(d, "shape") {
                        Some(V::Tuple(dims)) => dims.iter().try_fold(1u64, |acc, d| match d {
                            V::Int(n) if *n >= 0 => acc.checked_mul(*n as u64),
                            _ => None,
                        }),
                        _ => None,
                    }
                    .ok_or_else(|| bad("a joblib array whose shape cannot be read"))?;
                    let bytes = count.checked_mul(*size).ok_or_else(|| bad("a joblib array too large"))?;
                    After::Raw { bytes, padded: field(d, "numpy_array_alignment_bytes").is_some() }
                }
            }
            (V::Wrapper, _) => return Err(bad("a joblib array wrapper with an unreadable state")),
            _ => After::Nothing,
        };
        *top = V::Other;
        Ok(after)
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

/// The value one of the tight loop's pushing opcodes (`G`, `J`, `M`, `K`, `N`, `]`, `NEWTRUE`,
/// `NEWFALSE`) puts on the stack, from its argument bytes.
#[inline]
fn plain(op: u8, arg: &[u8]) -> V {
    match (op, arg) {
        (b'K', &[b]) => V::Int(i64::from(b)),
        (b'M', &[a, b]) => V::Int(i64::from(u16::from_le_bytes([a, b]))),
        (b'J', &[a, b, c, d]) => V::Int(i64::from(i32::from_le_bytes([a, b, c, d]))),
        _ => V::Other,
    }
}

/// How many bytes (the opcode and its argument) one of the opcodes the tight loop goes
/// through takes, or `None` for any other opcode.
#[inline]
fn fast_width(op: u8) -> Option<usize> {
    match op {
        b'G' | 0x95 => Some(9),
        b'J' => Some(5),
        b'M' => Some(3),
        b'K' => Some(2),
        b'(' | b'e' | 0x90 | b'a' | b'N' | b']' | 0x88 | 0x89 => Some(1),
        _ => None,
    }
}

/// Puts on the stack what a run of the tight loop held back: its bytes from the MARK on,
/// which hold only pushing opcodes, `APPEND`s of them and `FRAME`s.
fn replay(m: &mut Machine, run: &[u8]) -> io::Result<()> {
    let mut i = 0;
    while let Some(&op) = run.get(i) {
        let arg = fast_width(op)
            .and_then(|width| run.get(i + 1..i + width))
            .ok_or_else(|| bad("a held-back run holds an opcode the fast loop does not take, or ends inside one"))?;
        let width = arg.len() + 1;
        match op {
            0x95 => {}
            b'(' => m.push(V::Mark)?,
            b'a' => m.pop_n(1)?,
            _ => m.push(plain(op, arg))?,
        }
        i += width;
    }
    Ok(())
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

    /// One pickle, from its first opcode to `STOP`. `depth` counts pickles nested in
    /// pickles (joblib object arrays).
    fn one(&mut self, r: &mut dyn Input, depth: usize) -> io::Result<()> {
        if depth > MAX_NESTING {
            return Err(bad("pickles nested deeper than the scanner follows"));
        }
        let mut m = Machine::new();
        loop {
            // Runs of the opcodes that only push numbers, marks and plain values, or append
            // them, go through the buffered window in a tight loop: the same effect on the
            // machine as the match below, without a call per byte (lists of numbers are most
            // of a large state dict pickled by hand). A list's items between its MARK and its
            // APPENDS are not put on the stack at all, only counted: APPENDS removes them
            // again, and nothing between can read them. If the run ends before the APPENDS
            // (the window ends, another opcode comes), they are put on the stack then, by
            // going through their bytes again.
            let win = r.window();
            let mut i = 0;
            // Where an unwritten MARK is in the window, and how many items are above it.
            let mut held: Option<(usize, usize)> = None;
            while let Some(&op) = win.get(i) {
                let Some(width) = fast_width(op) else { break };
                if i + width > win.len() {
                    break;
                }
                match (op, &mut held) {
                    // FRAME: where the pickler's frames begin; nothing for the machine.
                    (0x95, _) => {}
                    (b'(', None) => held = Some((i, 0)),
                    (b'(', Some(_)) => break,
                    (b'e' | 0x90, Some(_)) => held = None,
                    (b'e' | 0x90, None) => m.discard_mark()?,
                    (b'a', Some((_, n))) if *n > 0 => *n -= 1,
                    // (An APPEND right after the MARK: the error is the slow path's.)
                    (b'a', Some(_)) => break,
                    (b'a', None) => m.pop_n(1)?,
                    (_, Some((_, n))) => {
                        if m.stack.len() + *n + 1 >= DEEP_STACK {
                            break;
                        }
                        *n += 1;
                    }
                    (_, None) => m.push(plain(op, &win[i + 1..i + width]))?,
                }
                i += width;
            }
            if let Some((mark, _)) = held {
                replay(&mut m, &win[mark..i])?;
            }
            r.advance(i);
            let [op] = array::<1>(r).map_err(|e| eof_as(e, "the pickle ends without STOP"))?;
            match op {
                b'.' => return Ok(()),
                b'(' => m.push(V::Mark)?,
                b'0' => m.pop_n(1)?,
                b'1' => m.discard_mark()?,
                b'2' => {
                    let v = m.top()?;
                    m.push(v)?;
                }
                b'I' => {
                    let s = line_str(r)?;
                    m.push(s.trim().parse().map_or(V::Other, V::Int))?;
                }
                // Text floats, longs and persistent ids.
                b'F' | b'L' | b'P' => {
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
                    let n = i32::from_le_bytes(array(r)?);
                    m.push(V::Int(i64::from(n)))?;
                }
                b'K' => {
                    let [n] = array::<1>(r)?;
                    m.push(V::Int(i64::from(n)))?;
                }
                b'M' => {
                    let n = u16::from_le_bytes(array(r)?);
                    m.push(V::Int(i64::from(n)))?;
                }
                b'G' => {
                    r.skip(8)?;
                    m.push(V::Other)?;
                }
                b')' => m.push(V::Tuple(Rc::new(Vec::new())))?,
                b'}' => m.push(V::Dict(Rc::new(Vec::new())))?,
                b'N' | b']' | 0x88 | 0x89 | 0x8f | 0x97 => m.push(V::Other)?,
                b'Q' | 0x98 => {
                    m.pop()?;
                    m.push(V::Other)?;
                }
                0x85 => {
                    let a = m.pop()?;
                    m.push(tuple(vec![a]))?;
                }
                0x86 => {
                    let b = m.pop()?;
                    let a = m.pop()?;
                    m.push(tuple(vec![a, b]))?;
                }
                0x87 => {
                    let c = m.pop()?;
                    let b = m.pop()?;
                    let a = m.pop()?;
                    m.push(tuple(vec![a, b, c]))?;
                }
                b'R' | 0x81 => {
                    let args = m.pop()?;
                    let callable = m.pop()?;
                    m.push(construct(&callable, &args))?;
                }
                0x92 => {
                    m.pop()?;
                    let args = m.pop()?;
                    let cls = m.pop()?;
                    m.push(construct(&cls, &args))?;
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
                    if (1..=8).contains(&n) {
                        let b = bytes(r, u64::from(n), 8, "a long")?;
                        let mut le = [if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 }; 8];
                        le[..b.len()].copy_from_slice(&b);
                        m.push(V::Int(i64::from_le_bytes(le)))?;
                    } else {
                        skip_counted(r, u64::from(n), &mut m)?;
                    }
                }
                0x8b => {
                    let n = len_u32(r)?;
                    skip_counted(r, n, &mut m)?;
                }
                b'a' => m.pop_n(1)?,
                b'b' => {
                    let state = m.pop()?;
                    match m.build(state)? {
                        After::Nothing => {}
                        After::Raw { bytes, padded } => {
                            if padded {
                                let [n] = array::<1>(r)?;
                                r.skip(u64::from(n))?;
                            }
                            r.skip(bytes)?;
                        }
                        After::Nested => self.one(r, depth + 1)?,
                    }
                }
                b's' => {
                    let v = m.pop()?;
                    let k = m.pop()?;
                    m.set_items(vec![k, v])?;
                }
                b'u' => {
                    let items = m.pop_mark()?;
                    m.set_items(items)?;
                }
                b'e' | 0x90 => m.discard_mark()?,
                b't' => {
                    let items = m.pop_mark()?;
                    m.push(tuple(items))?;
                }
                b'd' => {
                    let items = m.pop_mark()?;
                    m.push(V::Dict(Rc::new(Vec::new())))?;
                    m.set_items(items)?;
                }
                b'l' | 0x91 => {
                    m.discard_mark()?;
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
                    let at = r.position() - 1;
                    let module = line_str(r)?;
                    let name = line_str(r)?;
                    self.import(&module, &name, at);
                    m.push(V::Global(Rc::from(module), Rc::from(name)))?;
                }
                b'i' => {
                    let at = r.position() - 1;
                    let module = line_str(r)?;
                    let name = line_str(r)?;
                    self.import(&module, &name, at);
                    m.pop_mark()?;
                    m.push(V::Other)?;
                }
                0x93 => {
                    let at = r.position() - 1;
                    let name = m.pop()?;
                    let module = m.pop()?;
                    match (module, name) {
                        (V::Str(module), V::Str(name)) => {
                            self.import(&module, &name, at);
                            m.push(V::Global(module, name))?;
                        }
                        _ => {
                            let why = if m.memo_overflow {
                                "the memo outgrew the scanner"
                            } else {
                                "STACK_GLOBAL on values that are not strings"
                            };
                            self.unresolved(at, why);
                            m.push(V::Other)?;
                        }
                    }
                }
                0x82 => {
                    let at = r.position() - 1;
                    r.skip(1)?;
                    self.extension(at);
                    m.push(V::Other)?;
                }
                0x83 => {
                    let at = r.position() - 1;
                    r.skip(2)?;
                    self.extension(at);
                    m.push(V::Other)?;
                }
                0x84 => {
                    let at = r.position() - 1;
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
    if let Err(e) = w.one(r, 0) {
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
        if let Err(e) = w.one(&mut rest, 0) {
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
