//! Bakes libtorch's library folder into the rpath of every binary, test and doctest of this
//! crate, so they run without `LD_LIBRARY_PATH` (torch-sys links libtorch but sets no rpath).
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if std::env::var_os("CARGO_FEATURE_MODEL").is_none()
        && std::env::var("CARGO_PKG_NAME").as_deref() != Ok("seer-model")
    {
        return;
    }
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").ok().or_else(|| {
        std::env::var("LIBTORCH")
            .ok()
            .map(|dir| format!("{}/lib", dir.trim_end_matches('/')))
    });
    if let Some(lib) = lib {
        let lib = std::fs::canonicalize(&lib).map_or(lib, |p| p.display().to_string());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
