//! # kiln-frontend: `.pt2` archives → kiln IR
//!
//! Owns reading the archives that `torch.export.save` writes — the zip container (safely, with
//! size limits), the ExportedProgram JSON of schema major version 8, weights, buffers and
//! constants (honoring strides and storage offsets), symbolic dims with their ranges — and
//! lowering ATen ops, in both the default export IR and the core-ATen IR, onto kiln's small op
//! set (high-level ops are decomposed here). It does not know about targets, optimize, or run
//! anything.
//!
//! ```no_run
//! let model = kiln_frontend::load(std::path::Path::new("model.pt2"))?;
//! println!("{}", kiln_ir::text::print(&model.graph));
//! # Ok::<(), kiln_frontend::FrontendError>(())
//! ```

pub mod archive;
pub mod error;
pub mod export;
mod json;
pub mod lower;
pub mod sym;
pub mod weights;

pub use error::{FrontendError, UnsupportedOp};
pub use export::{ExportedProgram, InputKind};

use archive::Archive;
use kiln_ir::{Graph, TensorType, WeightStore};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

/// A model read from an archive: the IR graph and its weights.
#[derive(Clone, Debug)]
pub struct Model {
    pub graph: Graph,
    pub weights: WeightStore,
    pub info: ExportInfo,
}

/// Facts about the export itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ExportInfo {
    /// Schema (major, minor).
    pub schema: (i64, i64),
    pub torch_version: Option<String>,
}

/// One signature entry for `kiln inspect`.
#[derive(Clone, Debug)]
pub struct SignatureEntry {
    pub name: String,
    pub ty: TensorType,
}

/// What `kiln inspect` shows about an archive, available even when some ops are unsupported.
#[derive(Clone, Debug)]
pub struct Summary {
    pub info: ExportInfo,
    pub symbols: kiln_ir::SymbolTable,
    pub inputs: Vec<SignatureEntry>,
    pub outputs: Vec<SignatureEntry>,
    pub weight_count: usize,
    pub weight_bytes: u64,
    /// ATen target → number of nodes, sorted by target.
    pub op_histogram: BTreeMap<String, usize>,
    /// Every unsupported op, or empty.
    pub unsupported: Vec<UnsupportedOp>,
}

/// An opened archive with its decoded program, before lowering.
pub struct Pt2<R: Read + Seek> {
    archive: Archive<R>,
    program: ExportedProgram,
    stored: HashMap<String, weights::StoredTensor>,
}

/// Opens and decodes a `.pt2` file (does not read weights yet).
pub fn open(path: &Path) -> Result<Pt2<BufReader<File>>, FrontendError> {
    let file = File::open(path).map_err(|error| FrontendError::Io { path: path.display().to_string(), error })?;
    Pt2::new(BufReader::new(file))
}

/// Reads a `.pt2` file into IR and weights.
pub fn load(path: &Path) -> Result<Model, FrontendError> {
    open(path)?.lower()
}

impl<R: Read + Seek> Pt2<R> {
    pub fn new(reader: R) -> Result<Self, FrontendError> {
        let mut archive = Archive::open(reader)?;
        let doc = archive.read_json("models/model.json")?;
        let entry = format!("{}models/model.json", archive.prefix());
        let program = export::decode(&doc, &entry)?;
        let stored = weights::read_configs(&mut archive)?;
        Ok(Pt2 { archive, program, stored })
    }

    pub fn program(&self) -> &ExportedProgram {
        &self.program
    }

    fn info(&self) -> ExportInfo {
        ExportInfo { schema: self.program.schema, torch_version: self.program.torch_version.clone() }
    }

    fn graph_name(&self) -> String {
        let p = self.archive.prefix().trim_end_matches('/');
        if p.is_empty() { "model".to_string() } else { p.to_string() }
    }

    fn meta_type(&self, name: &str) -> Result<TensorType, FrontendError> {
        let m = self.program.tensors.get(name).ok_or_else(|| FrontendError::Schema {
            entry: "models/model.json".into(),
            path: format!("$.graph_module.graph.tensor_values.{name}"),
            reason: "no metadata for this graph input".into(),
        })?;
        Ok(TensorType::new(m.dtype, m.sizes.clone()))
    }

    /// Signature, sizes, op histogram and unsupported ops, without failing on unsupported ops.
    pub fn summary(&mut self) -> Result<Summary, FrontendError> {
        let mut inputs = Vec::new();
        let (mut weight_count, mut weight_bytes) = (0, 0u64);
        for (name, kind) in &self.program.inputs {
            match kind {
                InputKind::User => inputs.push(SignatureEntry { name: name.clone(), ty: self.meta_type(name)? }),
                InputKind::Weight { target, .. } => {
                    weight_count += 1;
                    if let Some(s) = self.stored.get(target) {
                        // Saturating: the sizes come from the file and may be absurd.
                        let numel = s.meta.sizes.iter().filter_map(|d| d.as_const()).fold(1u64, |a, d| a.saturating_mul(d.max(0) as u64));
                        weight_bytes = numel.saturating_mul(s.meta.dtype.size_bytes() as u64).saturating_add(weight_bytes);
                    }
                }
                InputKind::Constant => {}
            }
        }
        let mut outputs = Vec::new();
        for name in self.program.outputs.iter().flatten() {
            outputs.push(SignatureEntry { name: name.clone(), ty: self.meta_type(name)? });
        }
        let mut op_histogram = BTreeMap::new();
        for n in &self.program.nodes {
            *op_histogram.entry(n.target.clone()).or_insert(0) += 1;
        }
        let unsupported = match self.lower() {
            Err(FrontendError::Unsupported(list)) => list,
            _ => Vec::new(),
        };
        Ok(Summary { info: self.info(), symbols: self.program.symbols.clone(), inputs, outputs, weight_count, weight_bytes, op_histogram, unsupported })
    }

    /// Reads the weights and lowers the graph to IR.
    pub fn lower(&mut self) -> Result<Model, FrontendError> {
        let mut graph = Graph::new(self.graph_name());
        graph.symbols = self.program.symbols.clone();
        let mut store = WeightStore::default();
        let mut binds = Vec::new();
        // User inputs first, then weights, each in signature order.
        for (name, kind) in &self.program.inputs {
            if *kind == InputKind::User {
                let ty = self.meta_type(name)?;
                binds.push((name.clone(), graph.add_input(name, ty)));
            }
        }
        for (name, kind) in &self.program.inputs {
            let InputKind::Weight { target, .. } = kind else { continue };
            let ty = self.meta_type(name)?;
            let stored = self.stored.get(target).ok_or_else(|| FrontendError::MissingEntry(format!("data for weight `{target}` (not in the weights or constants config)")))?;
            let tensor = weights::load_tensor(&mut self.archive, target, stored)?;
            weights::check_matches(target, &tensor, ty.dtype, &ty.shape, &graph.symbols)?;
            let v = graph.add_weight(target, ty);
            store.insert(graph.value(v).name.clone(), tensor);
            binds.push((name.clone(), v));
        }
        let mut l = lower::Lowerer::new(graph, &self.program);
        for (name, v) in binds {
            l.bind(&name, v);
        }
        lower::lower_nodes(&mut l)?;
        for (i, out) in self.program.outputs.iter().enumerate() {
            let Some(name) = out else {
                return Err(FrontendError::Unsupported(vec![UnsupportedOp {
                    target: "output".into(),
                    node: format!("output {i}"),
                    source: None,
                    reason: Some("non-tensor model outputs are not supported".into()),
                }]));
            };
            let v = l.value(name).map_err(|_| FrontendError::Schema {
                entry: "models/model.json".into(),
                path: "$.graph_module.signature.output_specs".into(),
                reason: format!("output `{name}` is not defined by the graph"),
            })?;
            l.g.add_output(name, v);
        }
        let graph = l.g;
        kiln_ir::verify::verify(&graph)?;
        Ok(Model { graph, weights: store, info: self.info() })
    }
}
