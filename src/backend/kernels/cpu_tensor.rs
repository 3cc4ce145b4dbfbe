//! Borrowing the f32 data of a CPU tensor, and wrapping kernel output back into a tensor.

use candle_core::{bail, DType, Device, Result, Shape, Storage, StorageRef, Tensor};

/// Whether the CPU kernels handle this tensor (everything else keeps candle's ops).
pub fn is_cpu_f32(t: &Tensor) -> bool {
    t.device().is_cpu() && t.dtype() == DType::F32
}

/// A read guard on a contiguous CPU f32 tensor's storage, exposing its elements as a slice.
pub struct F32Data<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> F32Data<'a> {
    /// Fails unless `t` is a contiguous f32 CPU tensor (call `.contiguous()` first).
    pub fn new(t: &'a Tensor) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("CPU kernel input must be contiguous, got shape {:?} strides {:?}", layout.shape(), layout.stride())
        };
        if !matches!(&*guard, Storage::Cpu(_)) || t.dtype() != DType::F32 {
            bail!("CPU kernel input must be an f32 CPU tensor");
        }
        Ok(Self { guard, start, end })
    }

    pub fn slice(&self) -> &[f32] {
        match &*self.guard {
            // `new` checked the variant and the dtype.
            Storage::Cpu(cpu) => cpu.as_slice::<f32>().map(|s| &s[self.start..self.end]).unwrap_or(&[]),
            _ => &[],
        }
    }
}

/// Output tensor from a kernel's buffer.
pub fn tensor_from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// A zeroed output buffer. Large zeroed allocations come straight from `calloc`/`mmap`, so the
/// zeroing costs nothing beyond the page faults the first write would take anyway.
pub fn zeroed(len: usize) -> Vec<f32> {
    vec![0f32; len]
}

/// A raw output pointer that parallel tasks share; each task writes a disjoint set of elements.
#[derive(Clone, Copy)]
pub struct SharedOut(pub *mut f32);

impl SharedOut {
    /// The pointer (a method, so closures capture the whole `Sync` wrapper, not the field).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

// SAFETY: only used to hand disjoint output regions to rayon tasks (documented at each use).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}
