//! Weight bytes by name, kept beside a graph (the graph itself holds only names and types).

use crate::tensor::Tensor;
use std::collections::BTreeMap;

/// Named weights (parameters, buffers, constants) of a model, in name order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WeightStore {
    tensors: BTreeMap<String, Tensor>,
}

impl WeightStore {
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Total bytes of all weights.
    pub fn total_bytes(&self) -> usize {
        self.tensors.values().map(|t| t.bytes.len()).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.tensors.iter().map(|(k, v)| (k.as_str(), v))
    }
}
