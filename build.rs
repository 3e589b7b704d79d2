fn main() {
    napi_build::setup();
    // `cargo fuzz` (fuzz/) builds with `--cfg fuzzing`.
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
