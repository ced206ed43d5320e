//! With the `cuda` feature, compiles the fused inference kernels (fused/kernels.cu)
//! to PTX for `fused/cuda.rs`. nvcc comes from `$NVCC` or the PATH, the target
//! from `$CUDA_COMPUTE_CAP` (as for candle's own kernels; default 90, Hopper); the
//! driver compiles the PTX for the card it runs on.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=fused/kernels.cu");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("fused.ptx");
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let cap: String = std::env::var("CUDA_COMPUTE_CAP")
        .unwrap_or_else(|_| "90".into())
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", &format!("-arch=compute_{cap}"), "-o"])
        .arg(&out)
        .arg("fused/kernels.cu")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{nvcc} failed on fused/kernels.cu ({s})"),
        Err(e) => {
            panic!("cannot run {nvcc} for fused/kernels.cu: {e} (set NVCC or PATH)")
        }
    }
}
