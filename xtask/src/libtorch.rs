//! Provisioning of CPU-only libtorch for tch from the PyPI torch wheel.
//!
//! tch 0.26.0 expects libtorch 2.13.0. Debian's libtorch is too old and tch's own download
//! feature needs hosts this project cannot assume, so we take the libraries out of the
//! manylinux torch wheel (`pip download --no-deps`, no CUDA packages) and patch the two traps of
//! that wheel's CPU libraries: its `libtorch_cpu.so` names the CUDA runtime and CUPTI as NEEDED
//! (we build tiny stub libraries that export those versioned symbols; a CPU run never calls
//! them), and its `libtorch.so` is a shim that needs `libtorch_cuda.so` (we replace it with an
//! empty library linked against `torch_cpu` and `c10`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{display, root};

/// The libtorch version torch-sys 0.26.0 checks for.
pub(crate) const TORCH_VERSION: &str = "2.13.0";

const WHEEL_PLATFORM: &str = "manylinux_2_28_x86_64";

/// Where the project keeps its provisioned libtorch.
pub(crate) fn project_dir() -> PathBuf {
    root().join("third_party").join("libtorch")
}

/// Makes libtorch available and returns its folder.
///
/// Honours a `LIBTORCH` that points elsewhere than the project's folder (a user's own build,
/// e.g. with CUDA); otherwise provisions into `third_party/libtorch`, once.
pub(crate) fn setup() -> Result<PathBuf> {
    let started = Instant::now();
    let dest = project_dir();
    if let Some(user) = user_libtorch(&dest) {
        check_libtorch(&user)?;
        eprintln!("libtorch: using LIBTORCH={} (set by you)", user.display());
        return Ok(user);
    }
    let stamp = dest.join(format!(".provisioned-{TORCH_VERSION}"));
    if stamp.exists() {
        eprintln!(
            "libtorch {TORCH_VERSION} already provisioned at {}",
            dest.display()
        );
        return Ok(dest);
    }
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        bail!(
            "automatic libtorch provisioning supports linux x86_64 only; download libtorch \
             {TORCH_VERSION} yourself and set LIBTORCH to its folder"
        );
    }
    require_tool(
        "python3",
        &["--version"],
        "python3 is needed to fetch the torch wheel",
    )?;
    require_tool(
        "python3",
        &["-m", "pip", "--version"],
        "pip is needed to fetch the torch wheel (install python3-pip)",
    )?;
    require_tool(
        "cc",
        &["--version"],
        "a C compiler (cc) is needed to build the CUDA stubs",
    )?;
    require_tool(
        "nm",
        &["--version"],
        "nm (binutils) is needed to read libtorch's symbols",
    )?;

    let third_party = root().join("third_party");
    let wheels = std::env::var_os("TORCH_WHEEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| third_party.join(".wheels"));
    fs::create_dir_all(&wheels).with_context(|| format!("creating {}", wheels.display()))?;
    let wheel = wheels.join(format!(
        "torch-{TORCH_VERSION}-cp311-cp311-{WHEEL_PLATFORM}.whl"
    ));
    if wheel.exists() {
        eprintln!("libtorch: reusing {}", wheel.display());
    } else {
        eprintln!(
            "libtorch: downloading the torch {TORCH_VERSION} wheel (about 530 MB, CPU libraries \
             only are kept)"
        );
        let mut pip = Command::new("python3");
        pip.args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--platform", WHEEL_PLATFORM, "--python-version", "3.11"])
            .args(["--implementation", "cp", "--progress-bar", "on", "-d"])
            .arg(&wheels)
            .arg(format!("torch=={TORCH_VERSION}"));
        let status = pip
            .status()
            .with_context(|| format!("could not start `{}`", display(&pip)))?;
        if !status.success() || !wheel.exists() {
            bail!(
                "downloading the torch {TORCH_VERSION} wheel failed ({status}); is the Python \
                 package registry reachable? You can also set LIBTORCH to an existing libtorch \
                 {TORCH_VERSION}"
            );
        }
    }

    let tmp = third_party.join(format!(".libtorch-tmp-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let result = build_into(&wheel, &tmp, &dest);
    let _ = fs::remove_dir_all(&tmp);
    result?;
    fs::write(&stamp, TORCH_VERSION)?;
    eprintln!(
        "libtorch {TORCH_VERSION} (CPU only) ready at {} in {:.1}s",
        dest.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dest)
}

/// A LIBTORCH the user set, as opposed to the project default that `.cargo/config.toml` sets.
fn user_libtorch(project: &Path) -> Option<PathBuf> {
    let value = std::env::var_os("LIBTORCH")?;
    let path = PathBuf::from(value);
    let same = match (fs::canonicalize(&path), fs::canonicalize(project)) {
        (Ok(a), Ok(b)) => a == b,
        _ => path == project,
    };
    (!same).then_some(path)
}

fn check_libtorch(dir: &Path) -> Result<()> {
    let lib = dir.join("lib");
    let has_lib = ["libtorch_cpu.so", "libtorch.so", "libtorch_cpu.dylib"]
        .iter()
        .any(|f| lib.join(f).exists());
    if !has_lib || !dir.join("include").is_dir() {
        bail!(
            "LIBTORCH={} does not look like libtorch (expected lib/libtorch_cpu.so and include/); \
             unset it to let `cargo xtask setup` provision one",
            dir.display()
        );
    }
    Ok(())
}

fn require_tool(program: &str, args: &[&str], why: &str) -> Result<()> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => bail!("{why}: `{program} {}` failed", args.join(" ")),
    }
}

fn build_into(wheel: &Path, tmp: &Path, dest: &Path) -> Result<()> {
    eprintln!("libtorch: extracting headers and CPU libraries");
    let extract = r#"
import sys, zipfile
whl, out = sys.argv[1], sys.argv[2]
keep_libs = {"libc10.so", "libtorch_cpu.so", "libgomp.so.1"}
with zipfile.ZipFile(whl) as z:
    for m in z.namelist():
        if (m.startswith("torch/include/") and not m.endswith("/")) or \
           (m.startswith("torch/lib/") and m.rsplit("/", 1)[1] in keep_libs):
            z.extract(m, out)
"#;
    let mut py = Command::new("python3");
    py.arg("-c").arg(extract).arg(wheel).arg(tmp);
    checked(&mut py, "extracting the wheel")?;

    let torch = tmp.join("torch");
    let lib = torch.join("lib");
    fs::write(torch.join("build-version"), format!("{TORCH_VERSION}\n"))?;

    eprintln!("libtorch: building CUDA stub libraries");
    let undefined = output(
        Command::new("nm")
            .args(["-D", "--undefined-only"])
            .arg(lib.join("libtorch_cpu.so")),
        "reading libtorch_cpu.so's symbols",
    )?;
    for (soname, symbols) in cuda_imports(&undefined) {
        let c = tmp.join(format!("{soname}.c"));
        let map = tmp.join(format!("{soname}.map"));
        fs::write(&c, stub_source(&symbols))?;
        fs::write(&map, format!("{soname} {{ global: *; }};\n"))?;
        let mut cc = Command::new("cc");
        cc.args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(lib.join(&soname))
            .arg(format!("-Wl,-soname,{soname}"))
            .arg(format!("-Wl,--version-script={}", map.display()))
            .arg(&c);
        checked(&mut cc, "building a CUDA stub")?;
    }

    let empty = tmp.join("empty.c");
    fs::write(&empty, "\n")?;
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-o"])
        .arg(lib.join("libtorch.so"))
        .args(["-Wl,-soname,libtorch.so", "-Wl,--no-as-needed"])
        .arg(format!("-L{}", lib.display()))
        .args(["-ltorch_cpu", "-lc10", "-Wl,-rpath,$ORIGIN"])
        .arg(&empty);
    checked(&mut cc, "building the libtorch.so shim")?;
    let gomp = lib.join("libgomp.so");
    let _ = fs::remove_file(&gomp);
    std::os::unix::fs::symlink("libgomp.so.1", &gomp)?;

    let _ = fs::remove_dir_all(dest);
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::rename(&torch, dest).with_context(|| format!("moving libtorch to {}", dest.display()))?;
    Ok(())
}

/// Groups `nm -D --undefined-only` lines like `U cudaFree@libcudart.so.13` by library.
fn cuda_imports(nm: &str) -> Vec<(String, Vec<String>)> {
    let mut libs: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in nm.lines() {
        let Some(word) = line.split_whitespace().last() else {
            continue;
        };
        let Some((sym, lib)) = word.split_once('@') else {
            continue;
        };
        let lib = lib.trim_start_matches('@');
        if lib.starts_with("libcu") && lib.contains(".so.") {
            let syms = libs.entry(lib.to_owned()).or_default();
            if !syms.iter().any(|s| s == sym) {
                syms.push(sym.to_owned());
            }
        }
    }
    libs.into_iter().collect()
}

fn stub_source(symbols: &[String]) -> String {
    let mut c = String::from(
        "static const char m[] = \"CUDA not available (CPU-only libtorch, stub library)\";\n",
    );
    for sym in symbols {
        let body = match sym.as_str() {
            "cudaGetErrorString" | "cudaGetErrorName" => {
                format!("const char *{sym}(int e){{(void)e;return m;}}")
            }
            "cudaGetDeviceCount" => format!("int {sym}(int *n){{if(n)*n=0;return 100;}}"),
            "cudaDriverGetVersion" | "cudaRuntimeGetVersion" => {
                format!("int {sym}(int *v){{if(v)*v=0;return 0;}}")
            }
            "cuptiGetResultString" => {
                format!("int {sym}(int r,const char **s){{(void)r;if(s)*s=m;return 0;}}")
            }
            "cuptiGetCallbackName" => format!(
                "int {sym}(int d,unsigned c,const char **s){{(void)d;(void)c;if(s)*s=m;return 0;}}"
            ),
            _ => format!("int {sym}(void){{return 999;}}"),
        };
        c.push_str(&body);
        c.push('\n');
    }
    c
}

fn checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("{what}: could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("{what} failed ({status}): `{}`", display(cmd));
    }
    Ok(())
}

fn output(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("{what}: could not start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!("{what} failed ({}): `{}`", out.status, display(cmd));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cuda_imports_by_library() {
        let nm = "                 U cudaFree@libcudart.so.13\n\
                  \x20                U malloc@GLIBC_2.2.5\n\
                  \x20                U cuptiGetResultString@libcupti.so.13\n\
                  \x20                U cudaFree@libcudart.so.13\n";
        let got = cuda_imports(nm);
        assert_eq!(
            got,
            vec![
                ("libcudart.so.13".to_owned(), vec!["cudaFree".to_owned()]),
                (
                    "libcupti.so.13".to_owned(),
                    vec!["cuptiGetResultString".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn stubs_report_no_device() {
        let src = stub_source(&["cudaGetDeviceCount".to_owned(), "cudaFree".to_owned()]);
        assert!(src.contains("int cudaGetDeviceCount(int *n){if(n)*n=0;return 100;}"));
        assert!(src.contains("int cudaFree(void){return 999;}"));
    }
}
