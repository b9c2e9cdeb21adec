//! Prints the metric catalog as the Markdown table embedded in `docs/metrics.md`.
fn main() {
    print!("{}", eventstream_exporter::catalog::markdown_table());
}
