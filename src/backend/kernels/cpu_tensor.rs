//! Borrowing the f32 data of a CPU tensor, and wrapping kernel output back into a tensor.

use std::cell::{Cell, RefCell};
use std::thread::LocalKey;

use candle_core::{bail, CpuStorage, DType, Device, InplaceOp1, Layout, Result, Shape, Storage, StorageRef, Tensor};

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

/// Runs `write` on the elements of `t` in place, so a kernel can reuse a buffer it no longer
/// needs instead of allocating another one (at 512x512 the VAE's activations are 128-256 MiB).
///
/// `t` must be a contiguous f32 CPU tensor that the caller owns outright: one it created and has
/// not cloned, reshaped or narrowed into other handles that are still read, because every handle
/// sharing the storage sees the write. candle does not expose its reference counts, so this
/// cannot be checked here; callers state why their tensor qualifies.
pub fn write_owned(t: &Tensor, write: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<()> {
    if !is_cpu_f32(t) {
        bail!("in-place CPU kernel needs an f32 CPU tensor, got {:?} on {:?}", t.dtype(), t.device());
    }
    t.inplace_op1(&WriteOnce(Cell::new(Some(write))))
}

/// The candle hook behind [`write_owned`]: the closure runs once, on the storage's slice that
/// the layout addresses.
struct WriteOnce<F>(Cell<Option<F>>);

impl<F: FnOnce(&mut [f32]) -> Result<()>> InplaceOp1 for WriteOnce<F> {
    fn name(&self) -> &'static str {
        "write_owned"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("in-place CPU kernel needs a contiguous tensor, got strides {:?}", layout.stride())
        };
        let CpuStorage::F32(data) = storage else {
            bail!("in-place CPU kernel needs f32 storage")
        };
        match self.0.take() {
            Some(write) => write(&mut data[start..end]),
            None => bail!("write_owned ran twice"),
        }
    }
}

/// Empties a kernel's per-thread scratch (`key`) on this thread, unless a kernel is using it.
pub fn release_thread_scratch<T: Default>(key: &'static LocalKey<RefCell<T>>) {
    key.with(|cell| {
        if let Ok(mut scratch) = cell.try_borrow_mut() {
            *scratch = T::default();
        }
    });
}

/// Output tensor from a kernel's buffer.
pub fn tensor_from_vec(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// A zeroed output buffer. Large zeroed allocations come straight from `calloc`/`mmap`, so the
/// zeroing costs nothing beyond the page faults the first write would take anyway.
pub fn zeroed(len: usize) -> Vec<f32> {
    let buffer = vec![0f32; len];
    super::allocator::advise_huge_pages(&buffer);
    buffer
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
