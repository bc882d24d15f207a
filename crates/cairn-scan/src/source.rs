//! Where the scanned bytes come from: anything that can read at an offset (a file, a blob in
//! the store, a buffer), and a buffered reader over it that the format walkers and the zip
//! reader use. Memory stays bounded by the reader's window, whatever the file's size.

use std::io::{self, Read, Seek, SeekFrom};

/// Random-access bytes of a known length.
pub trait Source: Sync {
    fn len(&self) -> u64;
    /// Reads into `buf` from `offset`; returns how many bytes were read (0 only at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source for [u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(<[u8]>::len(self));
        let n = buf.len().min(<[u8]>::len(self) - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl Source for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

#[cfg(unix)]
impl Source for std::fs::File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

/// A file on disk with its length taken once.
#[cfg(unix)]
pub struct FileSource {
    file: std::fs::File,
    len: u64,
}

#[cfg(unix)]
impl FileSource {
    pub fn open(path: &std::path::Path) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self { file, len })
    }
}

#[cfg(unix)]
impl Source for FileSource {
    fn len(&self) -> u64 {
        self.len
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }
}

/// Sequential input for the format walkers: reads, skips without reading where it can, and
/// knows where it is.
pub trait Input: Read {
    fn skip(&mut self, n: u64) -> io::Result<()>;
    fn position(&self) -> u64;
    /// Fills `buf` exactly (the format walkers' hot path: opcodes and their arguments).
    fn exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.read_exact(buf)
    }
    /// The bytes already buffered from the current position on (possibly none), for walkers
    /// that can go through runs of simple opcodes without a call per byte.
    fn window(&self) -> &[u8] {
        &[]
    }
    /// Moves past `n` bytes of [`Input::window`] (`n` at most its length).
    fn advance(&mut self, _n: usize) {}
}

/// Smallest and largest read the buffered reader makes: sequential reads grow the window so a
/// remote source is asked few times, seeks shrink it back.
const MIN_WINDOW: usize = 64 * 1024;
const MAX_WINDOW: usize = 4 * 1024 * 1024;

/// A buffered `Read + Seek` over a [`Source`].
pub struct Reader<'a> {
    src: &'a dyn Source,
    len: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_start: u64,
    window: usize,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a dyn Source) -> Self {
        Self { src, len: src.len(), pos: 0, buf: Vec::new(), buf_start: 0, window: MIN_WINDOW }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Back to the first byte, for a second pass.
    pub fn seek_start(&mut self) {
        self.pos = 0;
    }

    fn fill(&mut self) -> io::Result<()> {
        // Reading on from the end of the window, or a short skip past it, is sequential: the
        // next window grows, so a remote source is asked few times. A seek elsewhere starts small.
        let end = self.buf_start + self.buf.len() as u64;
        let sequential = !self.buf.is_empty() && self.pos >= end && self.pos - end < self.window as u64;
        self.window = if sequential { (self.window * 2).min(MAX_WINDOW) } else { MIN_WINDOW };
        let want = usize::try_from(self.len.saturating_sub(self.pos)).unwrap_or(usize::MAX).min(self.window);
        self.buf.resize(want, 0);
        let mut got = 0;
        while got < want {
            let n = self.src.read_at(self.pos + got as u64, &mut self.buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.buf.truncate(got);
        self.buf_start = self.pos;
        Ok(())
    }
}

impl Read for Reader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.pos >= self.len {
            return Ok(0);
        }
        let in_buf = self.pos >= self.buf_start && self.pos < self.buf_start + self.buf.len() as u64;
        if !in_buf {
            self.fill()?;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let at = (self.pos - self.buf_start) as usize;
        let n = out.len().min(self.buf.len() - at);
        out[..n].copy_from_slice(&self.buf[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Reader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

impl Input for Reader<'_> {
    #[inline]
    fn exact(&mut self, out: &mut [u8]) -> io::Result<()> {
        // Straight from the window when it holds all of it.
        if self.pos >= self.buf_start {
            let at = (self.pos - self.buf_start) as usize;
            if let Some(src) = self.buf.get(at..at + out.len()) {
                out.copy_from_slice(src);
                self.pos += out.len() as u64;
                return Ok(());
            }
        }
        self.read_exact(out)
    }

    #[inline]
    fn window(&self) -> &[u8] {
        match self.pos.checked_sub(self.buf_start) {
            Some(at) => self.buf.get(usize::try_from(at).unwrap_or(usize::MAX)..).unwrap_or(&[]),
            None => &[],
        }
    }

    #[inline]
    fn advance(&mut self, n: usize) {
        debug_assert!(n <= self.window().len());
        self.pos += n as u64;
    }

    fn skip(&mut self, n: u64) -> io::Result<()> {
        let to = self.pos.checked_add(n).filter(|&to| to <= self.len);
        match to {
            Some(to) => {
                self.pos = to;
                Ok(())
            }
            None => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a length runs past the end of the file")),
        }
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

/// A sequential stream (a decompressed zip entry) as [`Input`]: skipping reads through.
pub struct Stream<R> {
    inner: R,
    pos: u64,
}

impl<R: Read> Stream<R> {
    pub fn new(inner: R) -> Self {
        Self { inner, pos: 0 }
    }
}

impl<R: Read> Read for Stream<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read> Input for Stream<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        let copied = io::copy(&mut (&mut self.inner).take(n), &mut io::sink())?;
        self.pos += copied;
        if copied < n {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a length runs past the end of the entry"));
        }
        Ok(())
    }
    fn position(&self) -> u64 {
        self.pos
    }
}

/// Reads exactly `N` bytes.
pub(crate) fn array<const N: usize>(r: &mut dyn Input) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.exact(&mut b)?;
    Ok(b)
}

/// Reads `n` bytes into memory, refusing more than `cap`.
pub(crate) fn bytes(r: &mut dyn Input, n: u64, cap: u64, what: &str) -> io::Result<Vec<u8>> {
    if n > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{what} of {n} bytes is larger than the {cap}-byte limit"),
        ));
    }
    let mut v = Vec::new();
    let got = r.take(n).read_to_end(&mut v)?;
    if (got as u64) < n {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{what} runs past the end of the file")));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts how often the source is asked.
    struct Counting(Vec<u8>, std::sync::atomic::AtomicUsize);

    impl Source for Counting {
        fn len(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.read_at(offset, buf)
        }
    }

    #[test]
    fn reading_on_with_short_skips_grows_the_window() {
        // An opcode-dense pickle: one byte read, eight skipped, over 64 MiB.
        let src = Counting(vec![0u8; 64 << 20], Default::default());
        let mut r = Reader::new(&src);
        let mut b = [0u8; 1];
        while r.position() + 9 <= src.len() {
            r.read_exact(&mut b).unwrap();
            r.skip(8).unwrap();
        }
        let asked = src.1.load(std::sync::atomic::Ordering::Relaxed);
        assert!(asked < 40, "64 MiB read in {asked} requests");
    }

    #[test]
    fn reader_reads_seeks_and_skips_across_windows() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut r = Reader::new(&data);
        let mut all = Vec::new();
        r.read_to_end(&mut all).unwrap();
        assert_eq!(all, data);
        r.seek(SeekFrom::Start(200_000)).unwrap();
        let mut b = [0u8; 4];
        r.read_exact(&mut b).unwrap();
        assert_eq!(b, data[200_000..200_004]);
        r.seek(SeekFrom::End(-2)).unwrap();
        assert_eq!(r.read(&mut b).unwrap(), 2);
        assert_eq!(r.read(&mut b).unwrap(), 0);
        r.seek(SeekFrom::Start(10)).unwrap();
        r.skip(5).unwrap();
        assert_eq!(r.position(), 15);
        assert!(r.skip(u64::MAX).is_err());
    }
}
