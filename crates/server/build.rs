// The web UI is embedded from frontend/dist (rust-embed): rebuild when a new
// UI build appears, or the binary keeps the UI it was compiled with.
fn main() {
    println!("cargo:rerun-if-changed=../../frontend/dist");
}
