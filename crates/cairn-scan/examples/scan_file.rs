//! Scans one file and prints how long the scanner took (no hashing, no server), for profiling:
//! `cargo run --release -p cairn-scan --example scan_file -- PATH`.

fn main() {
    let path = std::env::args().nth(1).expect("usage: scan_file PATH");
    let src = cairn_scan::FileSource::open(std::path::Path::new(&path)).expect("open");
    let started = std::time::Instant::now();
    let report = cairn_scan::Scanner::new().scan(&path, &src);
    let secs = started.elapsed().as_secs_f64();
    let mib = cairn_scan::Source::len(&src) as f64 / (1024.0 * 1024.0);
    println!(
        "{:?} {:?}: {} findings, {mib:.1} MiB in {secs:.3} s ({:.0} MiB/s)",
        report.format,
        report.status,
        report.findings.len(),
        mib / secs
    );
}
