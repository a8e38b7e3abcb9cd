use super::{parse, print};
use crate::dim::{Dim, SymId};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, TensorType};
use crate::op::{
    ArgKind, AttentionAttrs, AttentionMask, AttentionScale, BinaryOp, ConvAttrs, Op, PoolAttrs, PoolKind, ReduceKind,
    UnaryOp,
};

fn s0() -> Dim {
    Dim::symbol(SymId(0))
}

fn s1() -> Dim {
    Dim::symbol(SymId(1))
}

fn c(v: i64) -> Dim {
    Dim::constant(v)
}

fn ty(dtype: DType, shape: &[Dim]) -> TensorType {
    TensorType::new(dtype, shape.to_vec())
}

fn f32t(shape: &[Dim]) -> TensorType {
    ty(DType::F32, shape)
}

/// A graph with symbols `s0 in [1, 64]`, `s1 in [2, inf]`.
fn base(name: &str) -> Graph {
    let mut g = Graph::new(name);
    g.symbols.intern("s0", 1, Some(64));
    g.symbols.intern("s1", 2, None);
    g
}

/// Checks `parse(print(g)) == g` and that printing the parsed graph gives the same bytes.
#[track_caller]
fn round_trip(g: &Graph) -> String {
    let text = print(g);
    let parsed = match parse(&text) {
        Ok(p) => p,
        Err(e) => panic!("{e}\n--- text ---\n{text}"),
    };
    assert_eq!(&parsed, g, "parsed graph differs; text:\n{text}");
    assert_eq!(print(&parsed), text);
    text
}

/// One graph per case: the operand types become inputs, the op is added with inferred types.
fn op_cases() -> Vec<(Vec<TensorType>, Op)> {
    let mut cases = Vec::new();
    for u in UnaryOp::ALL {
        let dt = if u == UnaryOp::Not { DType::I64 } else { DType::F32 };
        cases.push((vec![ty(dt, &[s0(), c(3)])], Op::Unary(u)));
    }
    for b in BinaryOp::ALL {
        let dt = if b.is_logical() { DType::Bool } else { DType::F32 };
        cases.push((vec![ty(dt, &[s0(), c(1)]), ty(dt, &[c(4)])], Op::Binary(b)));
    }
    cases.push((vec![ty(DType::Bool, &[s0(), c(1)]), f32t(&[c(1), c(4)]), f32t(&[s0(), c(4)])], Op::Where));
    cases.push((vec![f32t(&[s0(), c(2)])], Op::Cast(DType::F16)));
    cases.push((vec![ty(DType::I32, &[s0()])], Op::Cast(DType::Bool)));
    for (i, kind) in ReduceKind::ALL.into_iter().enumerate() {
        cases.push((vec![f32t(&[s0(), c(3), c(4)])], Op::Reduce { kind, axes: vec![1, 2], keepdim: i % 2 == 0 }));
    }
    cases.push((vec![f32t(&[s0(), c(3)])], Op::Reduce { kind: ReduceKind::Sum, axes: vec![], keepdim: false }));
    cases.push((vec![f32t(&[s0(), c(3)])], Op::ArgReduce { kind: ArgKind::ArgMax, axis: 1, keepdim: true }));
    cases.push((vec![f32t(&[s0(), c(3)])], Op::ArgReduce { kind: ArgKind::ArgMin, axis: 0, keepdim: false }));
    cases.push((vec![f32t(&[c(2), s0(), c(8)]), f32t(&[c(8), s1()])], Op::MatMul));
    let conv = ConvAttrs {
        stride: vec![2, 1],
        padding: vec![1, 0],
        dilation: vec![1, 2],
        groups: 2,
        transposed: false,
        output_padding: vec![0, 0],
    };
    cases.push((vec![f32t(&[s0(), c(4), c(8), c(8)]), f32t(&[c(6), c(2), c(3), c(3)])], Op::Conv(conv)));
    let tconv = ConvAttrs {
        stride: vec![2],
        padding: vec![1],
        dilation: vec![1],
        groups: 1,
        transposed: true,
        output_padding: vec![1],
    };
    cases.push((vec![f32t(&[c(1), c(4), c(5)]), f32t(&[c(4), c(3), c(3)])], Op::Conv(tconv)));
    let max_pool = PoolAttrs {
        kind: PoolKind::Max,
        kernel: vec![3, 3],
        stride: vec![2, 2],
        padding: vec![1, 1],
        dilation: vec![1, 1],
        ceil_mode: true,
        count_include_pad: false,
    };
    cases.push((vec![f32t(&[s0(), c(3), c(7), c(7)])], Op::Pool(max_pool)));
    let avg_pool = PoolAttrs {
        kind: PoolKind::Avg,
        kernel: vec![2],
        stride: vec![2],
        padding: vec![0],
        dilation: vec![1],
        ceil_mode: false,
        count_include_pad: true,
    };
    cases.push((vec![f32t(&[c(1), c(2), c(9)])], Op::Pool(avg_pool)));
    cases.push((
        vec![f32t(&[s0(), c(3), c(7), c(7)])],
        Op::AdaptivePool { kind: PoolKind::Avg, output_size: vec![1, 1] },
    ));
    cases.push((vec![f32t(&[c(1), c(2), c(9)])], Op::AdaptivePool { kind: PoolKind::Max, output_size: vec![4] }));
    cases.push((vec![f32t(&[s0(), c(4), c(6)])], Op::Reshape { shape: vec![s0().scale(2), c(12)] }));
    cases.push((vec![f32t(&[c(1)])], Op::Reshape { shape: vec![] }));
    cases.push((vec![f32t(&[s0(), s1(), c(3)])], Op::Permute { perm: vec![2, 0, 1] }));
    cases.push((vec![f32t(&[s0(), c(1)])], Op::Expand { shape: vec![s0(), s1().mul(&s0()).add(&c(1))] }));
    cases.push((vec![f32t(&[s0(), c(10)])], Op::Slice { axis: 1, start: c(2), end: c(9), step: 3 }));
    let dim = s0().add(&c(3));
    cases.push((vec![f32t(&[dim.clone(), c(4)])], Op::Slice { axis: 0, start: c(1), end: dim, step: 1 }));
    cases.push((vec![f32t(&[s0(), c(2)]), f32t(&[s0(), s1()]), f32t(&[s0(), c(3)])], Op::Concat { axis: 1 }));
    cases.push((vec![f32t(&[s0(), c(5)])], Op::Pad { pads: vec![(1, 2), (0, -1)], value: f64::NEG_INFINITY }));
    cases.push((vec![f32t(&[c(5)])], Op::Pad { pads: vec![(3, 0)], value: 0.1 }));
    cases.push((vec![f32t(&[c(10), c(4)]), ty(DType::I64, &[s0(), c(2)])], Op::Gather { axis: 0 }));
    let iota = Op::Iota { shape: vec![s0(), c(3)], axis: 1, start: -1.5, step: 1e-7, dtype: DType::F32 };
    cases.push((vec![], iota));
    cases.push((vec![], Op::Full { shape: vec![], value: 0.5, dtype: DType::F32 }));
    let full = Op::Full { shape: vec![s0().mul(&s1()), c(2)], value: f64::INFINITY, dtype: DType::F64 };
    cases.push((vec![], full));
    cases.push((vec![], Op::Full { shape: vec![c(2)], value: -0.0, dtype: DType::I64 }));
    cases.push((vec![f32t(&[s0(), c(4)])], Op::CumSum { axis: 1 }));
    let qkv = vec![f32t(&[s0(), c(2), c(5), c(8)]), f32t(&[s0(), c(2), c(7), c(8)]), f32t(&[c(1), c(7), c(3)])];
    let plain = AttentionAttrs { scale: AttentionScale::Mul(0.125), masks: vec![] };
    cases.push((qkv.clone(), Op::Attention(plain)));
    let masks =
        vec![AttentionMask::Keep(f64::NEG_INFINITY), AttentionMask::Add, AttentionMask::Fill(-3.4028234663852886e38)];
    let masked = AttentionAttrs { scale: AttentionScale::Div(8.0), masks };
    let mut with_masks = qkv;
    with_masks.extend([ty(DType::Bool, &[c(5), c(7)]), f32t(&[s0(), c(1), c(1), c(7)]), ty(DType::Bool, &[c(7)])]);
    cases.push((with_masks, Op::Attention(masked)));
    cases.push((vec![], Op::DimValue { dim: s0().mul(&c(4)).add(&c(-1)), dtype: DType::I64 }));
    cases
}

#[test]
fn every_op_round_trips() {
    let mut seen = std::collections::BTreeSet::new();
    for (i, (types, op)) in op_cases().into_iter().enumerate() {
        let mut g = base(&format!("case{i}"));
        let inputs = types.iter().enumerate().map(|(k, t)| g.add_input(&format!("in{k}"), t.clone())).collect();
        seen.insert(op.name());
        let y = match g.add_node(op.clone(), inputs, "y", Some(format!("case.py:{i}"))) {
            Ok(y) => y,
            Err(e) => panic!("case {i} ({op:?}): {e}"),
        };
        g.add_output("y", y);
        round_trip(&g);
    }
    // Every op name (so every variant, every unary, binary, reduce and arg kind) was covered.
    assert_eq!(seen.len(), 21 + 18 + 5 + 2 + 18, "{seen:?}");
}

/// A graph using most features at once: interleaved weights, sources with escapes, odd names.
fn big_graph() -> Graph {
    let mut g = base("my model/v2");
    let x = g.add_input("x", f32t(&[s0(), c(16)]));
    let w = g.add_weight("fc1.weight", f32t(&[c(32), c(16)]));
    let t = g.add_node(Op::Permute { perm: vec![1, 0] }, vec![w], "t", None).unwrap();
    let mm = g
        .add_node(Op::MatMul, vec![x, t], "linear", Some("model.py:12 in forward: x = \"fc1\"(x)\t# é\\\n".into()))
        .unwrap();
    // A weight added after nodes keeps its place in the value order.
    let b = g.add_weight("fc1.bias", f32t(&[c(32)]));
    let y = g.add_node(Op::Binary(BinaryOp::Add), vec![mm, b], "linear", None).unwrap(); // named linear_1
    let r = g.add_node(Op::Unary(UnaryOp::Relu), vec![y], "relu", Some(String::new())).unwrap();
    let idx = g.add_input("idx", ty(DType::I64, &[s1()]));
    let gathered = g.add_node(Op::Gather { axis: 1 }, vec![r, idx], "g", None).unwrap();
    let sum = g
        .add_node(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdim: true }, vec![gathered], "sum", None)
        .unwrap();
    let half = g.add_node(Op::Full { shape: vec![], value: 0.5, dtype: DType::F32 }, vec![], "c", None).unwrap();
    let out = g.add_node(Op::Binary(BinaryOp::Mul), vec![sum, half], "out", Some("\u{1}\u{7f}\r".into())).unwrap();
    g.add_output("logits \"main\"", out);
    g.add_output("hidden", r);
    g
}

#[test]
fn big_graph_round_trips() {
    let text = round_trip(&big_graph());
    assert!(text.starts_with("graph \"my model/v2\"\n"), "{text}");
    assert!(text.contains("%linear_1: f32[s0, 32] = add %linear, %fc1.bias\n"), "{text}");
    assert!(text.contains("  @ \"model.py:12 in forward: x = \\\"fc1\\\"(x)\\t# é\\\\\\n\"\n"), "{text}");
    assert!(text.contains("  @ \"\\u{1}\\u{7f}\\r\"\n"), "{text}");
    assert!(text.contains("%relu: f32[s0, 32] = relu %linear_1  @ \"\"\n"), "{text}");
    // The late weight prints after the nodes before it.
    let t_line = text.find("%t:").unwrap();
    let bias_line = text.find("weight %fc1.bias").unwrap();
    assert!(t_line < bias_line);
}

const MLP: &str = "\
graph mlp
sym s0 in [1, 64]
sym s1 in [2, inf]
input %x: f32[s0, 16]
weight %fc1.weight: f32[32, 16]
%t: f32[16, 32] = permute{perm=[1, 0]} %fc1.weight
%linear: f32[s0, 32] = matmul %x, %t  @ \"model.py:12 in forward: x = self.fc1(x)\"
%sum: f32[s0, 1] = reduce_sum{axes=[1], keepdim=true} %linear
%c: f32[] = full{shape=[], value=0.5, dtype=f32}
%y: f32[s0, 1] = mul %sum, %c
%big: f32[s1, 2*s0*s1-3, 4] = full{shape=[s1, 2*s0*s1-3, 4], value=-1e-7, dtype=f32}
%conv: f32[2, 4, 4, 4] = conv{stride=[2, 2], padding=[1, 1], dilation=[1, 1], groups=1, transposed=false, output_padding=[0, 0]} %img, %k
output \"logits\" %y
";

#[test]
fn printed_text_is_pinned() {
    let mut g = base("mlp");
    let x = g.add_input("x", f32t(&[s0(), c(16)]));
    let w = g.add_weight("fc1.weight", f32t(&[c(32), c(16)]));
    let t = g.add_node(Op::Permute { perm: vec![1, 0] }, vec![w], "t", None).unwrap();
    let src = "model.py:12 in forward: x = self.fc1(x)".to_string();
    let lin = g.add_node(Op::MatMul, vec![x, t], "linear", Some(src)).unwrap();
    let sum =
        g.add_node(Op::Reduce { kind: ReduceKind::Sum, axes: vec![1], keepdim: true }, vec![lin], "sum", None).unwrap();
    let cst = g.add_node(Op::Full { shape: vec![], value: 0.5, dtype: DType::F32 }, vec![], "c", None).unwrap();
    let y = g.add_node(Op::Binary(BinaryOp::Mul), vec![sum, cst], "y", None).unwrap();
    let shape = vec![s1(), s0().mul(&s1()).scale(2).sub(&c(3)), c(4)];
    g.add_node(Op::Full { shape, value: -1e-7, dtype: DType::F32 }, vec![], "big", None).unwrap();
    let img = g.add_input("img", f32t(&[c(2), c(3), c(8), c(8)]));
    let k = g.add_weight("k", f32t(&[c(4), c(3), c(3), c(3)]));
    let conv = ConvAttrs {
        stride: vec![2, 2],
        padding: vec![1, 1],
        dilation: vec![1, 1],
        groups: 1,
        transposed: false,
        output_padding: vec![0, 0],
    };
    g.add_node(Op::Conv(conv), vec![img, k], "conv", None).unwrap();
    g.add_output("logits", y);
    let expected = MLP.replace("%conv:", "input %img: f32[2, 3, 8, 8]\nweight %k: f32[4, 3, 3, 3]\n%conv:");
    assert_eq!(print(&g), expected);
    round_trip(&g);
}

#[test]
fn module_doc_example_is_printed_form() {
    let doc = include_str!("mod.rs");
    let start = doc.find("//! ```text\n").unwrap() + "//! ```text\n".len();
    let end = start + doc[start..].find("//! ```\n").unwrap();
    let example: String = doc[start..end].lines().map(|l| format!("{}\n", l.trim_start_matches("//! "))).collect();
    assert!(example.starts_with("graph mlp\n"), "{example}");
    assert_eq!(print(&parse(&example).unwrap()), example);
}

#[test]
fn comments_blank_lines_crlf_and_attribute_order() {
    let text = "\
# a comment line

graph   \"g\"   # trailing comment
sym s0 in [1, 8]\r
input %x : f32[ s0 , 4 ]
%y: f32[s0+s0, 4] = concat{ axis = 0 } %x,%x   @ \"a # not a comment\" # a comment
%z: f32[4, 2*s0] = permute{perm=[1,0]} %y
%w: f32[4, 3] = slice{step=1, end=3, axis=1, start=0} %z
output \"o\" %w
";
    let g = parse(text).unwrap();
    let y = g.value_named("y").unwrap();
    assert_eq!(g.ty(y).shape[0], s0().scale(2));
    let node = g.nodes().next().unwrap().1;
    assert_eq!(node.source.as_deref(), Some("a # not a comment"));
    let printed = print(&g);
    assert!(printed.contains("%w: f32[4, 3] = slice{axis=1, start=0, end=3, step=1} %z\n"), "{printed}");
    assert_eq!(print(&parse(&printed).unwrap()), printed);
}

#[test]
fn floats_round_trip_exactly() {
    for v in [0.1, -0.0, 1e-300, 5e-324, f64::MAX, f64::MIN, 1.0 / 3.0, 123456789.0, 1e21, f64::INFINITY] {
        let mut g = Graph::new("f");
        let y = g.add_node(Op::Full { shape: vec![], value: v, dtype: DType::F64 }, vec![], "y", None).unwrap();
        g.add_output("y", y);
        let text = round_trip(&g);
        let back = parse(&text).unwrap();
        let Op::Full { value, .. } = &back.nodes().next().unwrap().1.op else { panic!() };
        assert_eq!(value.to_bits(), v.to_bits(), "{text}");
    }
    // NaN is never equal to itself, so only the bytes are compared.
    let mut g = Graph::new("nan");
    g.add_node(Op::Full { shape: vec![], value: f64::NAN, dtype: DType::F32 }, vec![], "y", None).unwrap();
    let text = print(&g);
    assert!(text.contains("value=NaN"), "{text}");
    assert_eq!(print(&parse(&text).unwrap()), text);
}

#[track_caller]
fn parse_err(text: &str, line: usize, needle: &str) {
    match parse(text) {
        Err(IrError::Parse { line: l, message }) => {
            assert_eq!(l, line, "wrong line for {message:?} in\n{text}");
            assert!(message.contains(needle), "{message:?} should mention {needle:?}");
        }
        other => panic!("expected a parse error at line {line}, got {other:?}\n{text}"),
    }
}

#[test]
fn parse_errors_name_the_line() {
    let head = "graph g\nsym s0 in [1, 8]\ninput %x: f32[s0, 4]\n";
    let with = |line: &str| format!("{head}{line}\n");
    parse_err("", 1, "missing the `graph NAME` line");
    parse_err("\n\n# nothing\n", 4, "missing the `graph NAME` line");
    parse_err("sym s0 in [1, 2]\n", 1, "first declaration must be `graph NAME`");
    parse_err("graph g\ngraph h\n", 2, "second `graph` line");
    parse_err("graph 1abc\n", 1, "graph name");
    parse_err(&with("sym s1 in [1, 2]"), 4, "`sym` lines must come before");
    parse_err(&with("output \"o\" %x\ninput %q: f32[]"), 5, "must come before `output` lines");
    parse_err("graph g\nsym s0 in [1, 2]\nsym s0 in [1, 3]\n", 3, "declared twice");
    parse_err("graph g\nsym 0s in [1, 2]\n", 2, "not an identifier");
    parse_err("graph g\nsym s in [1, 2\n", 2, "to close the symbol's range");
    parse_err(&with("input %x: f32[4]"), 4, "duplicate name %x");
    parse_err(&with("input %y: f32[s9]"), 4, "unknown symbol `s9`");
    parse_err(&with("input %y: f99[4]"), 4, "unknown dtype `f99`");
    parse_err(&with("input %y: f32[4"), 4, "expected `,` or `]`");
    parse_err(&with("input %y: f32[99999999999999999999]"), 4, "i64 range");
    parse_err(&with("input %y: f32[9223372036854775807*2]"), 4, "overflows i64");
    parse_err(&with("%y: f32[s0, 4] = frobnicate %x"), 4, "unknown op `frobnicate`");
    parse_err(&with("%y: f32[s0, 4] = neg %z"), 4, "unknown value %z");
    parse_err(&with("%y: f32[s0, 4] = neg %y"), 4, "unknown value %y");
    parse_err(&with("%y: f32[s0, 4] = cumsum %x"), 4, "needs attribute `axis`");
    parse_err(&with("%y: f32[s0, 4] = cumsum{axis=1, bogus=2} %x"), 4, "has no attribute `bogus`");
    parse_err(&with("%y: f32[s0, 4] = cumsum{axis=1, axis=1} %x"), 4, "given twice");
    parse_err(&with("%y: f32[s0, 4] = cumsum{axis=true} %x"), 4, "not a non-negative integer");
    parse_err(&with("%y: f32[s0, 4] = cumsum{axis=1 %x"), 4, "unterminated attribute list");
    parse_err(&with("%y: f32[s0, 4] = reduce_sum{axes=[1)], keepdim=true} %x"), 4, "unbalanced");
    parse_err(&with("%y: f32[s0, 4] = reduce_sum{axes=[1], keepdim=yes} %x"), 4, "`true` or `false`");
    parse_err(&with("%y: f32[s0, 4] = neg %x  @ \"unterminated"), 4, "unterminated string");
    parse_err(&with("%y: f32[s0, 4] = neg %x  @ \"bad \\q escape\""), 4, "unknown escape");
    parse_err(&with("%y: f32[s0, 4] = neg %x extra"), 4, "unexpected `extra`");
    parse_err(&with("%y: f32[s0, 4] = neg %x ; "), 4, "unexpected character ';'");
    parse_err(&with("%y: f32[s0, 4] = neg %x ∑"), 4, "unexpected character '∑'");
    parse_err(&with("output \"o\" %nope"), 4, "unknown value %nope");
    parse_err(&with("output o %x"), 4, "quoted string");
    parse_err(&with("%: f32[] = neg %x"), 4, "value name");
}

#[test]
fn invalid_graphs_are_verifier_errors() {
    let text = "graph g\ninput %x: f32[4]\n%y: f32[5] = neg %x\n";
    match parse(text) {
        Err(IrError::Verify(m)) => assert!(m.contains("%y") && m.contains("stored type f32[5]"), "{m}"),
        other => panic!("{other:?}"),
    }
    let text = "graph g\ninput %x: f32[4]\n%y: f32[4] = pool{kind=max, kernel=[1], stride=[0], padding=[0], dilation=[1], ceil_mode=false, count_include_pad=false} %x\n";
    match parse(text) {
        Err(IrError::Verify(m)) => assert!(m.contains("%y") && m.contains("stride"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn extreme_values_are_errors_not_panics() {
    const MAX: i64 = i64::MAX;
    let cases = [
        // Ceil-mode window arithmetic.
        format!("input %x: f32[1, 1, {MAX}]\n%y: f32[1, 1, 1] = pool{{kind=max, kernel=[1], stride=[{MAX}], padding=[0], dilation=[1], ceil_mode=true, count_include_pad=false}} %x"),
        // A zero stride would divide by zero.
        "input %x: f32[1, 1, 4]\n%y: f32[1, 1, 1] = pool{kind=avg, kernel=[1], stride=[0], padding=[0], dilation=[1], ceil_mode=false, count_include_pad=false} %x".into(),
        format!("input %x: f32[1, 1, 4]\nweight %w: f32[1, 1, 1]\n%y: f32[1, 1, 1] = conv{{stride=[{MAX}], padding=[0], dilation=[1], groups=1, transposed=true, output_padding=[0]}} %x, %w"),
        format!("input %x: f32[1, 2, 4]\nweight %w: f32[1, 2, 1]\n%y: f32[1, 1, 1] = conv{{stride=[1], padding=[0], dilation=[1], groups={MAX}, transposed=false, output_padding=[0]}} %x, %w"),
        format!("input %x: f32[5]\n%y: f32[1] = slice{{axis=0, start=0, end=5, step={MAX}}} %x"),
        format!("input %x: f32[5]\n%y: f32[1] = slice{{axis=0, start=-{MAX}, end={MAX}, step=1}} %x"),
        "input %x: f32[4294967296, 4294967296]\n%y: f32[1] = reshape{shape=[1]} %x".into(),
        format!("input %x: f32[{MAX}]\n%y: f32[1] = concat{{axis=0}} %x, %x"),
        format!("input %x: f32[5]\n%y: f32[1] = pad{{pads=[({MAX}, 1)], value=0.0}} %x"),
        format!("input %x: f32[{MAX}]\n%y: f32[1] = pad{{pads=[(1, 1)], value=0.0}} %x"),
        "input %x: f32[-9223372036854775808]".into(),
        "input %x: f32[-9223372036854775807-1]".into(),
        "input %x: f32[9223372036854775807+1]".into(),
        "input %x: f32[4294967296*4294967296]".into(),
        "%y: f32[1] = iota{shape=[1], axis=99999999999999999999, start=0.0, step=1.0, dtype=f32}".into(),
    ];
    for body in cases {
        let text = format!("graph g\n{body}\n");
        assert!(parse(&text).is_err(), "{text}");
    }
}

/// A tiny deterministic generator (xorshift) for the mutation test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Valid texts to mutate: the big graph and one graph per op case.
fn corpus() -> Vec<String> {
    let mut texts = vec![print(&big_graph())];
    for (types, op) in op_cases() {
        let mut g = base("m");
        let inputs = types.iter().enumerate().map(|(k, t)| g.add_input(&format!("in{k}"), t.clone())).collect();
        let y = g.add_node(op, inputs, "y", Some("s".into())).unwrap();
        g.add_output("y", y);
        texts.push(print(&g));
    }
    texts
}

const ALPHABET: &str = "%[]{}(),=:*+-@\"\\#\n 0129eé∑_.sxinfNaN";
const HUGE: [&str; 9] = [
    "99999999999999999999",
    "9223372036854775807",
    "-9223372036854775808",
    "4611686018427387904",
    "1e400",
    "3037000500",
    "0",
    "-1",
    "2",
];

/// Applies 1 to 3 random edits: insert, delete or replace a character, or replace a number
/// with an extreme one.
fn mutate(rng: &mut Rng, text: &str) -> String {
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    let mut cs: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(cs.len() + 1);
        match rng.below(5) {
            0 => cs.insert(i, alphabet[rng.below(alphabet.len())]),
            1 if i < cs.len() => {
                cs.remove(i);
            }
            2 | 3 => {
                let j = (i..cs.len()).find(|&j| cs[j].is_ascii_digit()).unwrap_or(cs.len());
                let k = (j..cs.len()).find(|&k| !cs[k].is_ascii_digit()).unwrap_or(cs.len());
                cs.splice(j..k, HUGE[rng.below(HUGE.len())].chars());
            }
            _ if i < cs.len() => cs[i] = alphabet[rng.below(alphabet.len())],
            _ => {}
        }
    }
    cs.into_iter().collect()
}

#[test]
fn parser_never_panics_on_mutated_input() {
    let corpus = corpus();
    // Every prefix and every single-character edit of the big graph.
    let alphabet: Vec<char> = ALPHABET.chars().collect();
    let chars: Vec<char> = corpus[0].chars().collect();
    let edit = |f: &dyn Fn(&mut Vec<char>)| {
        let mut cs = chars.clone();
        f(&mut cs);
        let _ = parse(&cs.into_iter().collect::<String>());
    };
    for i in 0..=chars.len() {
        edit(&|cs| cs.truncate(i));
        if i < chars.len() {
            edit(&|cs| {
                cs.remove(i);
            });
            // A few replacement characters per position, rotating through the alphabet.
            for k in 0..3 {
                let a = alphabet[(i * 7 + k * 11) % alphabet.len()];
                edit(&|cs| cs[i] = a);
            }
        }
    }
    // Random edits of every text; some must still parse, so the verifier and inference run on
    // extreme values too.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for round in 0..4000 {
        let text = &corpus[round % corpus.len()];
        parsed += usize::from(parse(&mutate(&mut rng, text)).is_ok());
    }
    assert!(parsed > 100, "only {parsed} mutated texts parsed");
    // Every number replaced by an extreme one at once.
    for text in &corpus {
        for h in HUGE {
            let mut out = String::new();
            let mut in_number = false;
            for ch in text.chars() {
                if ch.is_ascii_digit() {
                    if !in_number {
                        out.push_str(h);
                    }
                    in_number = true;
                } else {
                    in_number = false;
                    out.push(ch);
                }
            }
            let _ = parse(&out);
        }
    }
}

#[test]
fn op_keys_round_trip_every_op_of_the_pinned_text() {
    let text = MLP.replace("output \"logits\" %y", "input %img: f32[2, 3, 8, 8]\nweight %k: f32[4, 3, 3, 3]\n");
    let (before, conv) = text.split_once("%conv").unwrap();
    let (conv, after) = conv.split_once('\n').unwrap();
    let text = format!("{before}{after}%conv{conv}\noutput \"logits\" %y\n");
    let g = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for (_, node) in g.nodes() {
        let key = super::op_key(&node.op, &g.symbols);
        assert!(!key.contains(' '), "{key}");
        assert_eq!(super::parse_op_key(&key, &g.symbols).unwrap(), node.op, "{key}");
    }
    assert!(super::parse_op_key("permute{perm=[1,0]} extra", &g.symbols).is_err());
    assert!(super::parse_op_key("nonsense", &g.symbols).is_err());
}
