//! Just enough POSIX tar (pax/ustar) to stream a version's files as one archive: a header
//! per regular file, a pax extended header for paths longer than ustar's 100 bytes, and the
//! two zero blocks at the end. Sizes are known in advance, so the archive's length is too.

const BLOCK: u64 = 512;

/// Bytes of zero padding after `size` bytes of file data.
pub fn padding(size: u64) -> usize {
    usize::try_from((BLOCK - size % BLOCK) % BLOCK).unwrap_or(0)
}

/// The end of an archive.
pub fn trailer() -> Vec<u8> {
    vec![0; 2 * BLOCK as usize]
}

fn octal(field: &mut [u8], value: u64) {
    // Width minus one digits, zero-padded, then NUL.
    let digits = field.len() - 1;
    let s = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(&s.as_bytes()[s.len() - digits..]);
    field[digits] = 0;
}

fn header_block(name: &[u8], size: u64, mtime: u64, typeflag: u8) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// One pax record `"<len> path=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}").len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// The header(s) that precede a file's data: a ustar header, preceded by a pax header
/// when the path does not fit ustar's name field.
pub fn file_header(path: &str, size: u64, mtime: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    if path.len() > 100 {
        let record = pax_record("path", path);
        out.extend_from_slice(&header_block(b"PaxHeader", record.len() as u64, mtime, b'x'));
        out.extend_from_slice(&record);
        out.resize(out.len() + padding(record.len() as u64), 0);
    }
    out.extend_from_slice(&header_block(path.as_bytes(), size, mtime, b'0'));
    out
}

/// The exact length of an archive of files with these paths and sizes.
pub fn archive_len<'a>(files: impl Iterator<Item = (&'a str, u64)>) -> u64 {
    files.map(|(p, s)| file_header(p, s, 0).len() as u64 + s + padding(s) as u64).sum::<u64>() + 2 * BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_count_their_own_length() {
        for n in [1, 80, 90, 95, 100, 995, 1000] {
            let r = pax_record("path", &"x".repeat(n));
            let len: usize = std::str::from_utf8(&r).unwrap().split(' ').next().unwrap().parse().unwrap();
            assert_eq!(len, r.len(), "{n}");
        }
    }

    #[test]
    fn headers_are_blocks_with_a_valid_checksum() {
        let h = file_header("a/b.bin", 1234, 1_700_000_000);
        assert_eq!(h.len(), 512);
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        let mut copy = h.clone();
        copy[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, copy.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&h[124..135], b"00000002322");
        assert_eq!(file_header(&"d/".repeat(60), 0, 0).len(), 512 * 3);
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 511);
        assert_eq!(padding(512), 0);
    }
}
