//! Embeds the commit the binary was built from (`plantops --version`):
//! PLANTOPS_COMMIT when set (container and package builds without `.git`),
//! else git's, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PLANTOPS_COMMIT");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = std::env::var("PLANTOPS_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    // Rebuilt when HEAD moves (a commit, a checkout).
    for path in ["HEAD", "refs/heads"] {
        if let Some(file) = git(&["rev-parse", "--git-path", path]) {
            println!("cargo:rerun-if-changed={file}");
        }
    }
    println!("cargo:rustc-env=PLANTOPS_COMMIT={commit}");
}
