//! The ExportedProgram JSON (`models/model.json`) read into plain Rust structures.
//!
//! Only what kiln needs is read: schema version, range constraints, tensor metadata, the
//! signature (which graph inputs are user inputs, parameters, buffers or constants), the nodes
//! with their arguments, and the outputs. Anything malformed is a [`FrontendError::Schema`].

use crate::error::FrontendError;
use crate::json::{arr, field, float, int, obj, str_, union, At};
use crate::sym::parse_sym_expr;
use kiln_ir::{DType, Dim, SymbolTable};
use serde_json::Value;
use std::collections::HashMap;

/// The schema major version kiln reads.
pub const SUPPORTED_SCHEMA_MAJOR: i64 = 8;

/// A symbolic integer argument: a named SymInt value or a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum SymArg {
    Name(String),
    Int(i64),
}

/// A symbolic float argument.
#[derive(Clone, Debug, PartialEq)]
pub enum SymFloatArg {
    Name(String),
    Float(f64),
}

/// One argument of a node, decoded from the schema's `Argument` union.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    None,
    Tensor(String),
    Tensors(Vec<String>),
    OptionalTensors(Vec<Option<String>>),
    Int(i64),
    Ints(Vec<i64>),
    Float(f64),
    Floats(Vec<f64>),
    Bool(bool),
    Bools(Vec<bool>),
    Str(String),
    SymInt(SymArg),
    /// A symbolic float: a named SymFloat value or a literal.
    SymFloat(SymFloatArg),
    SymInts(Vec<SymArg>),
    ScalarType(i64),
    /// Memory format, layout, device and other arguments kiln ignores.
    Ignored(String),
}

/// One node of the exported graph.
#[derive(Clone, Debug)]
pub struct ExportNode {
    pub target: String,
    pub name: String,
    /// Named arguments in schema order.
    pub inputs: Vec<(String, Arg)>,
    /// Output slots: each a tensor name, a sym-int name, or `None` for an unnamed slot.
    pub outputs: Vec<Option<String>>,
    /// The user's source line, from the node's `stack_trace`.
    pub source: Option<String>,
}

/// Static metadata of one tensor value.
#[derive(Clone, Debug)]
pub struct TensorMeta {
    pub dtype: DType,
    pub sizes: Vec<Dim>,
    pub strides: Vec<Dim>,
    pub storage_offset: Dim,
}

/// What a graph input is.
#[derive(Clone, Debug, PartialEq)]
pub enum InputKind {
    User,
    /// Parameter, buffer or tensor constant, with its state-dict name.
    Weight { target: String, constant: bool },
    /// A user input that is not a tensor (an int, a float, `None`): baked in at export.
    Constant,
}

/// A decoded `model.json`.
#[derive(Clone, Debug)]
pub struct ExportedProgram {
    pub schema: (i64, i64),
    pub torch_version: Option<String>,
    pub symbols: SymbolTable,
    pub tensors: HashMap<String, TensorMeta>,
    pub sym_ints: HashMap<String, Dim>,
    /// Graph inputs in order: (graph name, kind).
    pub inputs: Vec<(String, InputKind)>,
    pub nodes: Vec<ExportNode>,
    /// User outputs in order: graph value names (`None` for non-tensor outputs).
    pub outputs: Vec<Option<String>>,
}

/// Maps the schema's ScalarType codes to kiln dtypes.
pub fn dtype_from_code(code: i64, name: &str) -> Result<DType, FrontendError> {
    let unsupported = |d: &str| FrontendError::UnsupportedDType { name: name.to_string(), dtype: d.to_string() };
    Ok(match code {
        1 => DType::U8,
        2 => DType::I8,
        3 => DType::I16,
        4 => DType::I32,
        5 => DType::I64,
        6 => DType::F16,
        7 => DType::F32,
        8 => DType::F64,
        12 => DType::Bool,
        13 => DType::BF16,
        9..=11 => return Err(unsupported("complex")),
        28 => return Err(unsupported("uint16")),
        29..=33 => return Err(unsupported("float8")),
        34 => return Err(unsupported("uint32")),
        35 => return Err(unsupported("uint64")),
        _ => return Err(FrontendError::UnknownDType { name: name.to_string(), code }),
    })
}

/// The user's own line from a stack trace: the innermost frame outside PyTorch's sources,
/// as `file:line in func: code`.
pub fn user_source_line(trace: &str) -> Option<String> {
    let lines: Vec<&str> = trace.lines().collect();
    let mut best = None;
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let Some(rest) = t.strip_prefix("File \"") else { continue };
        let Some((file, tail)) = rest.split_once('"') else { continue };
        if file.contains("/torch/") || file.contains("\\torch\\") {
            continue;
        }
        let line_no = tail.split("line ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("?").trim();
        let func = tail.split(" in ").nth(1).unwrap_or("").trim();
        let code = lines.get(i + 1).map(|c| c.trim()).filter(|c| !c.starts_with("File \"")).unwrap_or("");
        best = Some(format!("{file}:{line_no} in {func}: {code}"));
    }
    best
}

fn sym_int(v: &Value, at: &At, symbols: &mut SymbolTable) -> Result<Dim, FrontendError> {
    let (kind, payload) = union(v, at)?;
    match kind {
        "as_int" => Ok(Dim::constant(int(payload, &at.key(kind))?)),
        "as_expr" => {
            let at = at.key(kind);
            let text = str_(field(payload, "expr_str", &at)?, &at.key("expr_str"))?;
            parse_sym_expr(text, symbols).map_err(|reason| FrontendError::SymExpr { expr: text.to_string(), reason })
        }
        other => Err(at.err(format!("unknown SymInt kind `{other}`"))),
    }
}

fn sym_arg(v: &Value, at: &At) -> Result<SymArg, FrontendError> {
    let (kind, payload) = union(v, at)?;
    match kind {
        "as_name" => Ok(SymArg::Name(str_(payload, &at.key(kind))?.to_string())),
        "as_int" => Ok(SymArg::Int(int(payload, &at.key(kind))?)),
        other => Err(at.err(format!("unknown SymIntArgument kind `{other}`"))),
    }
}

fn tensor_name(v: &Value, at: &At) -> Result<String, FrontendError> {
    Ok(str_(field(v, "name", at)?, &at.key("name"))?.to_string())
}

/// Decodes one `Argument` union.
pub fn decode_arg(v: &Value, at: &At) -> Result<Arg, FrontendError> {
    let (kind, p) = union(v, at)?;
    let at = at.key(kind);
    fn list<'v>(p: &'v Value, at: &At) -> Result<std::iter::Enumerate<std::slice::Iter<'v, Value>>, FrontendError> {
        arr(p, at).map(|a| a.iter().enumerate())
    }
    Ok(match kind {
        "as_none" => Arg::None,
        "as_tensor" => Arg::Tensor(tensor_name(p, &at)?),
        "as_tensors" => Arg::Tensors(list(p, &at)?.map(|(i, t)| tensor_name(t, &at.index(i))).collect::<Result<_, _>>()?),
        "as_optional_tensors" => Arg::OptionalTensors(
            list(p, &at)?
                .map(|(i, t)| {
                    let at = at.index(i);
                    let (k, q) = union(t, &at)?;
                    match k {
                        "as_tensor" => Ok(Some(tensor_name(q, &at.key(k))?)),
                        "as_none" => Ok(None),
                        other => Err(at.err(format!("unknown optional tensor kind `{other}`"))),
                    }
                })
                .collect::<Result<_, _>>()?,
        ),
        "as_optional_tensor" => {
            let (k, q) = union(p, &at)?;
            match k {
                "as_tensor" => Arg::Tensor(tensor_name(q, &at.key(k))?),
                _ => Arg::None,
            }
        }
        "as_int" => Arg::Int(int(p, &at)?),
        "as_ints" => Arg::Ints(list(p, &at)?.map(|(i, x)| int(x, &at.index(i))).collect::<Result<_, _>>()?),
        "as_float" => Arg::Float(float(p, &at)?),
        "as_floats" => Arg::Floats(list(p, &at)?.map(|(i, x)| float(x, &at.index(i))).collect::<Result<_, _>>()?),
        "as_bool" => Arg::Bool(p.as_bool().ok_or_else(|| at.err("expected a bool"))?),
        "as_bools" => {
            Arg::Bools(list(p, &at)?.map(|(i, x)| x.as_bool().ok_or_else(|| at.index(i).err("expected a bool"))).collect::<Result<_, _>>()?)
        }
        "as_string" => Arg::Str(str_(p, &at)?.to_string()),
        "as_sym_int" => Arg::SymInt(sym_arg(p, &at)?),
        "as_sym_float" => {
            let (k, q) = union(p, &at)?;
            match k {
                "as_name" => Arg::SymFloat(SymFloatArg::Name(str_(q, &at.key(k))?.to_string())),
                "as_float" => Arg::SymFloat(SymFloatArg::Float(float(q, &at.key(k))?)),
                other => return Err(at.err(format!("unknown SymFloatArgument kind `{other}`"))),
            }
        }
        "as_sym_ints" => Arg::SymInts(list(p, &at)?.map(|(i, x)| sym_arg(x, &at.index(i))).collect::<Result<_, _>>()?),
        "as_scalar_type" => Arg::ScalarType(int(p, &at)?),
        other => Arg::Ignored(other.to_string()),
    })
}

fn tensor_meta(name: &str, v: &Value, at: &At, symbols: &mut SymbolTable) -> Result<TensorMeta, FrontendError> {
    let dtype = dtype_from_code(int(field(v, "dtype", at)?, &at.key("dtype"))?, name)?;
    let dims = |key: &str, symbols: &mut SymbolTable| -> Result<Vec<Dim>, FrontendError> {
        let at = at.key(key);
        arr(field(v, key, &at)?, &at)?.iter().enumerate().map(|(i, d)| sym_int(d, &at.index(i), symbols)).collect()
    };
    let sizes = dims("sizes", symbols)?;
    let strides = dims("strides", symbols)?;
    if sizes.len() != strides.len() {
        return Err(at.err("sizes and strides differ in length"));
    }
    let storage_offset = match v.get("storage_offset") {
        Some(o) => sym_int(o, &at.key("storage_offset"), symbols)?,
        None => Dim::constant(0),
    };
    Ok(TensorMeta { dtype, sizes, strides, storage_offset })
}

/// Decodes the whole document. `entry` names the archive entry for error messages.
pub fn decode(doc: &Value, entry: &str) -> Result<ExportedProgram, FrontendError> {
    let root = At::root(entry);
    let version = field(doc, "schema_version", &root)?;
    let at_v = root.key("schema_version");
    let major = int(field(version, "major", &at_v)?, &at_v.key("major"))?;
    let minor = version.get("minor").and_then(Value::as_i64).unwrap_or(0);
    if major != SUPPORTED_SCHEMA_MAJOR {
        return Err(FrontendError::SchemaVersion { found: major, supported: SUPPORTED_SCHEMA_MAJOR });
    }
    let torch_version = doc.get("torch_version").and_then(Value::as_str).map(str::to_string);

    // Symbols with their ranges first, so later sizes refer to them.
    let mut symbols = SymbolTable::default();
    if let Some(rc) = doc.get("range_constraints") {
        let at = root.key("range_constraints");
        let mut names: Vec<(&String, &Value)> = obj(rc, &at)?.iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        for (name, r) in names {
            let at = at.key(name);
            let min = r.get("min_val").and_then(Value::as_i64).unwrap_or(0);
            // max_val is a huge integer or a string like "int_oo" when unbounded.
            let max = r.get("max_val").and_then(Value::as_i64).filter(|m| *m < i64::MAX / 2);
            if let Some(m) = max {
                if m < min {
                    return Err(at.err(format!("empty range [{min}, {m}]")));
                }
            }
            // Names may be plain (`s0`) or expressions; only plain names are symbols.
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                symbols.intern(name, min, max);
            }
        }
    }

    let gm = field(doc, "graph_module", &root)?;
    let at_gm = root.key("graph_module");
    let graph = field(gm, "graph", &at_gm)?;
    let at_g = at_gm.key("graph");

    let mut tensors = HashMap::new();
    let at_tv = at_g.key("tensor_values");
    for (name, meta) in obj(field(graph, "tensor_values", &at_g)?, &at_tv)? {
        tensors.insert(name.clone(), tensor_meta(name, meta, &at_tv.key(name), &mut symbols)?);
    }
    let mut sym_ints = HashMap::new();
    if let Some(si) = graph.get("sym_int_values") {
        let at = at_g.key("sym_int_values");
        for (name, v) in obj(si, &at)? {
            sym_ints.insert(name.clone(), sym_int(v, &at.key(name), &mut symbols)?);
        }
    }

    let sig = field(gm, "signature", &at_gm)?;
    let at_sig = at_gm.key("signature");
    let mut inputs = Vec::new();
    let at_in = at_sig.key("input_specs");
    for (i, spec) in arr(field(sig, "input_specs", &at_sig)?, &at_in)?.iter().enumerate() {
        let at = at_in.index(i);
        let (kind, p) = union(spec, &at)?;
        let at = at.key(kind);
        let arg = field(p, "arg", &at)?;
        let weight = |target_key: &str, constant: bool| -> Result<(String, InputKind), FrontendError> {
            let target = str_(field(p, target_key, &at)?, &at.key(target_key))?.to_string();
            Ok((tensor_name(arg, &at.key("arg"))?, InputKind::Weight { target, constant }))
        };
        inputs.push(match kind {
            "user_input" => match decode_arg(arg, &at.key("arg"))? {
                Arg::Tensor(name) => (name, InputKind::User),
                _ => (format!("__const_input_{i}"), InputKind::Constant),
            },
            "parameter" => weight("parameter_name", false)?,
            "buffer" => weight("buffer_name", false)?,
            "tensor_constant" => weight("tensor_constant_name", true)?,
            "constant_input" => (format!("__const_input_{i}"), InputKind::Constant),
            other => return Err(at.err(format!("input kind `{other}` is not supported (custom objects and tokens cannot be compiled)"))),
        });
    }

    let mut nodes = Vec::new();
    let at_nodes = at_g.key("nodes");
    for (i, n) in arr(field(graph, "nodes", &at_g)?, &at_nodes)?.iter().enumerate() {
        let at = at_nodes.index(i);
        let target = str_(field(n, "target", &at)?, &at.key("target"))?.to_string();
        let mut args = Vec::new();
        let at_a = at.key("inputs");
        for (j, a) in arr(field(n, "inputs", &at)?, &at_a)?.iter().enumerate() {
            let at = at_a.index(j);
            let name = str_(field(a, "name", &at)?, &at.key("name"))?.to_string();
            args.push((name, decode_arg(field(a, "arg", &at)?, &at.key("arg"))?));
        }
        let mut outputs = Vec::new();
        let at_o = at.key("outputs");
        for (j, o) in arr(field(n, "outputs", &at)?, &at_o)?.iter().enumerate() {
            let at = at_o.index(j);
            match decode_arg(o, &at)? {
                Arg::Tensor(t) => outputs.push(Some(t)),
                Arg::Tensors(ts) => outputs.extend(ts.into_iter().map(Some)),
                Arg::OptionalTensors(ts) => outputs.extend(ts),
                Arg::SymInt(SymArg::Name(s)) | Arg::SymFloat(SymFloatArg::Name(s)) => outputs.push(Some(s)),
                _ => outputs.push(None),
            }
        }
        let source = n.get("metadata").and_then(|m| m.get("stack_trace")).and_then(Value::as_str).and_then(user_source_line);
        let name = n.get("name").and_then(Value::as_str).map(str::to_string).or_else(|| outputs.iter().flatten().next().cloned()).unwrap_or_else(|| format!("node_{i}"));
        nodes.push(ExportNode { target, name, inputs: args, outputs, source });
    }

    let mut outputs = Vec::new();
    let at_os = at_sig.key("output_specs");
    for (i, spec) in arr(field(sig, "output_specs", &at_sig)?, &at_os)?.iter().enumerate() {
        let at = at_os.index(i);
        let (kind, p) = union(spec, &at)?;
        let at = at.key(kind);
        if kind != "user_output" {
            return Err(at.err(format!("output kind `{kind}` is not supported (buffer mutations and gradients are not compiled)")));
        }
        outputs.push(match decode_arg(field(p, "arg", &at)?, &at.key("arg"))? {
            Arg::Tensor(t) => Some(t),
            _ => None,
        });
    }

    Ok(ExportedProgram { schema: (major, minor), torch_version, symbols, tensors, sym_ints, inputs, nodes, outputs })
}
