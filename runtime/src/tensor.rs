//! Host tensors as the runtime exchanges them with callers: an element type, a shape and
//! little-endian bytes in row-major order.

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
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        (n.checked_mul(dtype.size_bytes())? == data.len()).then_some(HostTensor { dtype, shape, data })
    }

    pub fn zeros(dtype: ElemType, shape: Vec<usize>) -> HostTensor {
        let n: usize = shape.iter().product();
        HostTensor { dtype, shape, data: vec![0; n * dtype.size_bytes()] }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}
