fn main() {
    napi_build::setup();
    // `cargo fuzz` (fuzz/) builds with `--cfg fuzzing`.
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    hot_path_section();
}

/// On Linux the addon's per-request functions go side by side in one `.text.hot` section (src/hot_path.ld,
/// made by `node bench/hot-path.mjs`): after an idle gap the CPU then walks a few pages of our code instead of
/// one per function. A partial script (`INSERT BEFORE .text`), so GNU ld and lld keep their default layout.
fn hot_path_section() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let script = std::path::Path::new(&dir).join("src").join("hot_path.ld");
    let script = script.to_string_lossy();
    // The absolute path, as in the link argument: a target dir shared by two checkouts (a git worktree) can keep
    // this script's output from the other one, and then the file it names going away makes the script run again.
    println!("cargo::rerun-if-changed={script}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    // `-Wl,` splits at commas: a checkout path holding one builds without the section rather than failing.
    if script.contains(',') {
        println!("cargo::warning=no hot path section: the checkout path contains a comma ({script})");
        return;
    }
    println!("cargo::rustc-cdylib-link-arg=-Wl,-T,{script}");
}
