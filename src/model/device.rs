//! Where a model runs: `cpu` (the default) or a CUDA GPU (`cuda`, `cuda:N`) when the
//! binary was built with the `cuda` feature.

use candle_core::{DType, Device, DeviceLocation};

use super::{ModelError, Result};

/// Parses `cpu`, `cuda` (GPU 0) or `cuda:N`. A CUDA device in a binary built without
/// the `cuda` feature is refused with an error that says so.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim();
    if s.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| bad_device(s))?,
        None => return Err(bad_device(s)),
    };
    cuda_device(ordinal)
}

fn bad_device(s: &str) -> ModelError {
    ModelError::Config(format!("unknown device `{s}` (use cpu, cuda or cuda:N)"))
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| ModelError::Config(format!("cannot open CUDA device {ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(ordinal: usize) -> Result<Device> {
    Err(ModelError::Config(format!(
        "device `cuda:{ordinal}` is unavailable: this binary was built without the `cuda` \
         feature (rebuild with `cargo build --release --features cuda`)"
    )))
}

/// The activation dtype used when none is given: f32 on the CPU, bf16 on a GPU.
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// A short name: `cpu`, `cuda:0`, `metal:0`.
pub fn device_name(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_refuses_nonsense() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:", "cuda:x", "cudax"] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("unknown device"), "{bad}: {e}");
        }
        assert_eq!(device_name(&Device::Cpu), "cpu");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        for s in ["cuda", "cuda:1"] {
            let e = parse_device(s).unwrap_err().to_string();
            assert!(e.contains("built without the `cuda` feature"), "{e}");
        }
    }
}
