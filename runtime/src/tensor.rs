//! Host tensors as the runtime exchanges them with callers: an element type, a shape and
//! little-endian bytes in row-major order. [`HostTensor`] owns its bytes; [`TensorRef`]
//! borrows them (inputs passed without copying, e.g. from the C API).

use crate::manifest::ElemType;

#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub dtype: ElemType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl HostTensor {
    /// A tensor from bytes; `None` when the byte count does not match the shape.
    pub fn new(dtype: ElemType, shape: Vec<usize>, data: Vec<u8>) -> Option<HostTensor> {
        (byte_len(dtype, &shape)? == data.len()).then_some(HostTensor { dtype, shape, data })
    }

    pub fn zeros(dtype: ElemType, shape: Vec<usize>) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor { dtype, shape, data: vec![0; n * dtype.size_bytes()] }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The tensor as a borrowed [`TensorRef`].
    pub fn view(&self) -> TensorRef<'_> {
        TensorRef { dtype: self.dtype, shape: &self.shape, data: &self.data }
    }
}

/// A tensor whose shape and bytes are borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TensorRef<'a> {
    pub dtype: ElemType,
    pub shape: &'a [usize],
    pub data: &'a [u8],
}

impl TensorRef<'_> {
    /// The bytes the shape needs; `None` on overflow.
    pub fn byte_len(&self) -> Option<usize> {
        byte_len(self.dtype, self.shape)
    }
}

/// `product(shape) * dtype size`; `None` on overflow.
pub fn byte_len(dtype: ElemType, shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?.checked_mul(dtype.size_bytes())
}
