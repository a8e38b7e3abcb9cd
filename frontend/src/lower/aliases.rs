//! Aliasing in the default export IR, where in-place ATen ops (`relu_`, `add_`, `fill_`) may
//! still appear.
//!
//! kiln's IR is functional, so an in-place op becomes a new value and every name that refers
//! to the same tensor is rebound to it. That is only correct when no *other* tensor shares the
//! mutated storage: a write through a view (`x[:, 1:3].fill_(1)`) must change the base too,
//! which kiln does not model. Such writes are reported as unsupported, with the advice to
//! export the functional (core ATen) form, where PyTorch has already rewritten them into
//! `slice_scatter` and friends.

use std::collections::HashMap;

/// ATen ops whose result may share storage with their first operand.
const VIEW_OPS: &[&str] = &[
    "_unsafe_view", "alias", "as_strided", "chunk", "contiguous", "detach", "diagonal", "expand",
    "expand_as", "flatten", "movedim", "narrow", "permute", "reshape", "select", "slice", "split",
    "split_with_sizes", "squeeze", "swapaxes", "t", "to", "transpose", "type_as", "unbind", "unflatten",
    "unfold", "unsqueeze", "view", "view_as",
];

/// In-place ops that do not change values at inference time.
const NO_OP_MUTATIONS: &[&str] = &["dropout", "feature_dropout"];

/// Which export names denote the same tensor, and which tensors share storage.
#[derive(Default)]
pub(crate) struct Aliases {
    tensor_of: HashMap<String, usize>,
    storage_of: Vec<usize>,
    names_of: HashMap<usize, Vec<String>>,
}

impl Aliases {
    fn fresh_tensor(&mut self, storage: Option<usize>) -> usize {
        let id = self.storage_of.len();
        self.storage_of.push(storage.unwrap_or(id));
        id
    }

    fn name(&mut self, name: &str, tensor: usize) {
        self.tensor_of.insert(name.to_string(), tensor);
        self.names_of.entry(tensor).or_default().push(name.to_string());
    }

    fn tensor(&mut self, name: &str) -> usize {
        if let Some(&t) = self.tensor_of.get(name) {
            return t;
        }
        let t = self.fresh_tensor(None);
        self.name(name, t);
        t
    }

    /// Records the outputs of a node: `base` is the op's base name, `first` its first tensor
    /// operand. Returns, for an in-place op, the names to rebind to its result.
    pub(crate) fn record(&mut self, base: &str, in_place: bool, first: Option<&str>, outputs: &[String]) -> Result<Vec<String>, String> {
        let Some(first) = first else {
            for o in outputs {
                let t = self.fresh_tensor(None);
                self.name(o, t);
            }
            return Ok(Vec::new());
        };
        let src = self.tensor(first);
        if in_place {
            if !NO_OP_MUTATIONS.contains(&base) {
                let storage = self.storage_of[src];
                let shared = (0..self.storage_of.len()).any(|t| t != src && self.storage_of[t] == storage && self.names_of.contains_key(&t));
                if shared {
                    return Err(format!(
                        "in-place `{base}_` writes to `{first}`, which shares memory with another tensor (a view); kiln reads the functional form of such writes: export with `ep.run_decompositions()`"
                    ));
                }
            }
            let rebind = self.names_of.get(&src).cloned().unwrap_or_default();
            for o in outputs {
                self.name(o, src);
            }
            return Ok(rebind);
        }
        let storage = VIEW_OPS.contains(&base).then_some(self.storage_of[src]);
        for o in outputs {
            let t = self.fresh_tensor(storage);
            self.name(o, t);
        }
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn in_place_chain_rebinds_every_name_of_the_tensor() {
        let mut a = Aliases::default();
        a.record("conv2d", false, Some("x"), &names(&["c"])).unwrap();
        assert_eq!(a.record("relu", true, Some("c"), &names(&["r"])).unwrap(), names(&["c"]));
        assert_eq!(a.record("add", true, Some("r"), &names(&["s"])).unwrap(), names(&["c", "r"]));
    }

    #[test]
    fn write_through_a_view_is_refused() {
        let mut a = Aliases::default();
        a.record("new_zeros", false, Some("x"), &names(&["m"])).unwrap();
        a.record("slice", false, Some("m"), &names(&["v"])).unwrap();
        assert!(a.record("fill", true, Some("v"), &names(&["f"])).is_err());
        // ... and so is a write to the base while a view of it exists.
        assert!(a.record("fill", true, Some("m"), &names(&["g"])).is_err());
    }

    #[test]
    fn dropout_in_place_on_a_view_is_fine() {
        let mut a = Aliases::default();
        a.record("flatten", false, Some("x"), &names(&["f"])).unwrap();
        assert!(a.record("dropout", true, Some("f"), &names(&["d"])).is_ok());
    }
}
