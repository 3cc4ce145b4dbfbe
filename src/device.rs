//! Which compute device runs the models: chosen at build time by cargo feature (`cuda`, `metal`,
//! CPU otherwise) and at run time by `--device N` (the accelerator ordinal).

use candle_core::Device;

/// The device label rbee reports (`cuda:0`, `metal:0`, `cpu:0`), known before any device exists.
pub fn device_label(ordinal: u32) -> String {
    if cfg!(feature = "cuda") {
        format!("cuda:{ordinal}")
    } else if cfg!(feature = "metal") {
        format!("metal:{ordinal}")
    } else {
        "cpu:0".to_string()
    }
}

/// Open the device; the error is one sentence saying what to check.
pub fn open_device(ordinal: u32) -> Result<Device, String> {
    #[cfg(feature = "cuda")]
    {
        Device::new_cuda(ordinal as usize).map_err(|e| {
            format!("CUDA device {ordinal} could not be opened ({e}); check nvidia-smi and pass --device with an existing GPU index")
        })
    }
    #[cfg(all(feature = "metal", not(feature = "cuda")))]
    {
        Device::new_metal(ordinal as usize)
            .map_err(|e| format!("Metal device {ordinal} could not be opened ({e}); pass --device with an existing GPU index"))
    }
    #[cfg(not(any(feature = "cuda", feature = "metal")))]
    {
        if ordinal != 0 {
            tracing::info!(ordinal, "CPU build: --device is ignored");
        }
        tracing::info!("running on the CPU (build with --features cuda or metal for a GPU)");
        crate::backend::kernels::log_cpu_kernels();
        crate::backend::kernels::allocator::tune_allocator();
        Ok(Device::Cpu)
    }
}
