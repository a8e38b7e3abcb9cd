//! The parser: [`parse`] reads the text form described in [`crate::text`].
//!
//! Each line is lexed into tokens and parsed on its own; every error is an
//! [`IrError::Parse`] with the 1-based line number. Nothing here panics on any input: numbers
//! are parsed with overflow checks, lists are matched by counting brackets (no recursion
//! depth to exhaust), and the finished graph goes through [`crate::verify::verify`], whose
//! checks make type inference safe to run.

use super::print::is_bare_graph_name;
use crate::dim::{Dim, SymId, SymbolTable};
use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, TensorType, ValueId};
use crate::op::{
    ArgKind, AttentionAttrs, AttentionMask, AttentionScale, BinaryOp, ConvAttrs, Op, PoolAttrs, PoolKind, ReduceKind,
    UnaryOp,
};
use crate::verify::{is_symbol_name, verify};
use std::collections::{BTreeMap, HashMap};

/// Reads a graph from its text form, then runs the verifier on it (returning the verifier's
/// [`IrError::Verify`] when the text is well formed but the graph is not valid).
pub fn parse(text: &str) -> Result<Graph, IrError> {
    let mut p = Parser { graph: None, stage: Stage::Start, values: HashMap::new() };
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        p.line(line).map_err(|message| IrError::Parse { line: line_no, message })?;
    }
    let Some(graph) = p.graph else {
        let line = text.split('\n').count();
        return Err(IrError::Parse { line, message: "missing the `graph NAME` line".into() });
    };
    verify(&graph)?;
    Ok(graph)
}

type R<T> = Result<T, String>;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// `[A-Za-z0-9_.]+` (a word starting with a digit may also hold an exponent sign: `1e-7`).
    Word(String),
    /// `%name`.
    Value(String),
    /// A string literal, unescaped.
    Str(String),
    Punct(char),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Value(v) => format!("`%{v}`"),
            Tok::Str(s) => format!("string {}", super::print::quote(s)),
            Tok::Punct(c) => format!("`{c}`"),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

fn lex(line: &str) -> R<Vec<Tok>> {
    let chars: Vec<char> = line.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut toks = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        match c {
            ' ' | '\t' | '\r' => i += 1,
            '#' => break,
            '"' => {
                i += 1;
                let mut s = String::new();
                loop {
                    match at(i) {
                        None => return Err("unterminated string".into()),
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some('\\') => {
                            let (c, len) = unescape(&chars[i + 1..])?;
                            s.push(c);
                            i += 1 + len;
                        }
                        Some(c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(s));
            }
            '%' => {
                let start = i + 1;
                i = start;
                while at(i).is_some_and(is_name_char) {
                    i += 1;
                }
                if i == start {
                    return Err("expected a value name ([A-Za-z0-9_.]+) after `%`".into());
                }
                toks.push(Tok::Value(chars[start..i].iter().collect()));
            }
            c if is_name_char(c) => {
                let start = i;
                let numeric = c.is_ascii_digit();
                loop {
                    match at(i) {
                        Some(c) if is_name_char(c) => i += 1,
                        Some('+' | '-')
                            if numeric
                                && matches!(at(i.wrapping_sub(1)), Some('e' | 'E'))
                                && at(i + 1).is_some_and(|c| c.is_ascii_digit()) =>
                        {
                            i += 1
                        }
                        _ => break,
                    }
                }
                toks.push(Tok::Word(chars[start..i].iter().collect()));
            }
            '[' | ']' | '{' | '}' | '(' | ')' | ',' | '=' | ':' | '*' | '+' | '-' | '@' => {
                toks.push(Tok::Punct(c));
                i += 1;
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    Ok(toks)
}

/// Reads one escape after a backslash: the character and how many chars it took.
fn unescape(rest: &[char]) -> R<(char, usize)> {
    match rest.first() {
        Some('\\') => Ok(('\\', 1)),
        Some('"') => Ok(('"', 1)),
        Some('n') => Ok(('\n', 1)),
        Some('t') => Ok(('\t', 1)),
        Some('r') => Ok(('\r', 1)),
        Some('u') => {
            let close =
                rest.iter().position(|&c| c == '}').filter(|&p| rest.get(1) == Some(&'{') && (3..=8).contains(&p));
            let Some(close) = close else { return Err("malformed `\\u{HEX}` escape".into()) };
            let hex: String = rest[2..close].iter().collect();
            let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
            c.map(|c| (c, close + 1)).ok_or_else(|| format!("`\\u{{{hex}}}` is not a character"))
        }
        Some(c) => Err(format!("unknown escape `\\{c}`")),
        None => Err("unterminated string".into()),
    }
}

/// A cursor over a line's tokens.
struct Cursor<'t> {
    toks: &'t [Tok],
    pos: usize,
}

impl<'t> Cursor<'t> {
    fn new(toks: &'t [Tok]) -> Self {
        Cursor { toks, pos: 0 }
    }

    fn peek(&self) -> Option<&'t Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<&'t Tok> {
        let t = self.toks.get(self.pos);
        self.pos += usize::from(t.is_some());
        t
    }

    fn found(&self) -> String {
        self.peek().map_or_else(|| "the end of the line".into(), Tok::describe)
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Punct(c))
    }

    fn eat(&mut self, c: char) -> bool {
        let yes = self.is_punct(c);
        self.pos += usize::from(yes);
        yes
    }

    fn expect(&mut self, c: char, context: &str) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(format!("expected `{c}` {context}, found {}", self.found()))
        }
    }

    fn word(&mut self, what: &str) -> R<&'t str> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok(w)
            }
            _ => Err(format!("expected {what}, found {}", self.found())),
        }
    }

    fn keyword(&mut self, kw: &str) -> R<()> {
        match self.peek() {
            Some(Tok::Word(w)) if w == kw => {
                self.pos += 1;
                Ok(())
            }
            _ => Err(format!("expected `{kw}`, found {}", self.found())),
        }
    }

    fn value(&mut self, what: &str) -> R<&'t str> {
        match self.peek() {
            Some(Tok::Value(v)) => {
                self.pos += 1;
                Ok(v)
            }
            _ => Err(format!("expected {what} (`%name`), found {}", self.found())),
        }
    }

    fn string(&mut self, what: &str) -> R<&'t str> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(format!("expected {what} (a quoted string), found {}", self.found())),
        }
    }

    fn end(&self, context: &str) -> R<()> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {} {context}", t.describe())),
        }
    }

    // ---- typed values ----

    /// `-`? digits, as `i64`.
    fn int(&mut self, what: &str) -> R<i64> {
        let neg = self.eat('-');
        let w = self.word(what)?;
        let text = if neg { format!("-{w}") } else { w.to_string() };
        text.parse::<i64>().map_err(|_| format!("{what}: `{text}` is not an integer in the i64 range"))
    }

    fn index(&mut self, what: &str) -> R<usize> {
        let w = self.word(what)?;
        w.parse::<usize>().map_err(|_| format!("{what}: `{w}` is not a non-negative integer in range"))
    }

    fn boolean(&mut self, what: &str) -> R<bool> {
        match self.word(what)? {
            "true" => Ok(true),
            "false" => Ok(false),
            w => Err(format!("{what}: expected `true` or `false`, found `{w}`")),
        }
    }

    /// `-`? then anything `f64::from_str` reads (`0.5`, `1e-7`, `inf`, `NaN`).
    fn float(&mut self, what: &str) -> R<f64> {
        let neg = self.eat('-');
        let w = self.word(what)?;
        let text = if neg { format!("-{w}") } else { w.to_string() };
        text.parse::<f64>().map_err(|_| format!("{what}: `{text}` is not a number"))
    }

    fn dtype(&mut self, what: &str) -> R<DType> {
        let w = self.word(what)?;
        DType::from_name(w).ok_or_else(|| format!("{what}: unknown dtype `{w}`"))
    }

    fn pool_kind(&mut self, what: &str) -> R<PoolKind> {
        match self.word(what)? {
            "max" => Ok(PoolKind::Max),
            "avg" => Ok(PoolKind::Avg),
            w => Err(format!("{what}: expected `max` or `avg`, found `{w}`")),
        }
    }

    /// `[item, item, ...]`.
    fn list<T>(&mut self, what: &str, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        self.expect('[', &format!("to open {what}"))?;
        let mut out = Vec::new();
        if self.eat(']') {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(']') {
                return Ok(out);
            }
            self.expect(',', &format!("or `]` in {what}"))?;
        }
    }

    /// `(v)`: the float argument of `mul(v)`, `keep(v)` and the like.
    fn call_arg(&mut self, what: &str) -> R<f64> {
        self.expect('(', &format!("to open an argument in {what}"))?;
        let v = self.float(what)?;
        self.expect(')', &format!("to close an argument in {what}"))?;
        Ok(v)
    }

    /// `(a, b)`.
    fn pair(&mut self, what: &str) -> R<(i64, i64)> {
        self.expect('(', &format!("to open a pair in {what}"))?;
        let a = self.int(what)?;
        self.expect(',', &format!("in a pair in {what}"))?;
        let b = self.int(what)?;
        self.expect(')', &format!("to close a pair in {what}"))?;
        Ok((a, b))
    }

    /// A dim: `-`? term ((`+`|`-`) term)*, a term being factors (integers, symbols) joined by
    /// `*`. Computed with overflow checks, then built into a canonical [`Dim`].
    fn dim(&mut self, symbols: &SymbolTable, what: &str) -> R<Dim> {
        let overflow = || format!("{what}: the dim overflows i64");
        let mut poly: BTreeMap<Vec<SymId>, i64> = BTreeMap::new();
        let mut sign = if self.eat('-') { -1i64 } else { 1 };
        loop {
            let mut coeff = sign;
            let mut mono = Vec::new();
            loop {
                match self.peek() {
                    Some(Tok::Word(w)) if w.starts_with(|c: char| c.is_ascii_digit()) => {
                        let k = w
                            .parse::<i64>()
                            .map_err(|_| format!("{what}: `{w}` is not an integer in the i64 range"))?;
                        coeff = coeff.checked_mul(k).ok_or_else(overflow)?;
                    }
                    Some(Tok::Word(w)) => {
                        let s = symbols
                            .lookup(w)
                            .ok_or_else(|| format!("{what}: unknown symbol `{w}` (declare it with `sym`)"))?;
                        mono.push(s);
                    }
                    _ => return Err(format!("{what}: expected an integer or a symbol, found {}", self.found())),
                }
                self.pos += 1;
                if !self.eat('*') {
                    break;
                }
            }
            mono.sort();
            let slot = poly.entry(mono).or_insert(0);
            *slot = slot.checked_add(coeff).ok_or_else(overflow)?;
            sign = if self.eat('+') {
                1
            } else if self.eat('-') {
                -1
            } else {
                break;
            };
        }
        // Distinct monomials with coefficients already summed: the public arithmetic below
        // multiplies by 1 and adds to 0 only, so it cannot overflow.
        let mut dim = Dim::constant(0);
        for (mono, coeff) in poly.into_iter().filter(|(_, c)| *c != 0) {
            let term = mono.into_iter().fold(Dim::constant(coeff), |acc, s| acc.mul(&Dim::symbol(s)));
            dim = dim.add(&term);
        }
        Ok(dim)
    }

    fn dims(&mut self, symbols: &SymbolTable, what: &str) -> R<Vec<Dim>> {
        self.list(what, |c| c.dim(symbols, what))
    }

    /// `dtype[dim, ...]`.
    fn ty(&mut self, symbols: &SymbolTable) -> R<TensorType> {
        let dtype = self.dtype("a type")?;
        let shape = self.dims(symbols, "a shape")?;
        Ok(TensorType::new(dtype, shape))
    }
}

/// The attributes of one node, as unparsed token runs by key.
struct Attrs<'t> {
    op: &'t str,
    entries: Vec<(&'t str, &'t [Tok])>,
}

impl<'t> Attrs<'t> {
    /// Reads `{key=value, ...}` (or nothing): each value is the tokens up to the next `,` or
    /// `}` outside brackets.
    fn read(c: &mut Cursor<'t>, op: &'t str) -> R<Attrs<'t>> {
        let mut attrs = Attrs { op, entries: Vec::new() };
        if !c.eat('{') {
            return Ok(attrs);
        }
        if c.eat('}') {
            return Ok(attrs);
        }
        loop {
            let key = c.word("an attribute name")?;
            if attrs.entries.iter().any(|(k, _)| *k == key) {
                return Err(format!("attribute `{key}` of `{op}` is given twice"));
            }
            c.expect('=', &format!("after attribute `{key}`"))?;
            let start = c.pos;
            let mut depth = 0usize;
            loop {
                match c.peek() {
                    None => return Err(format!("unterminated attribute list of `{op}` (missing `}}`)")),
                    Some(Tok::Punct('[' | '(' | '{')) => depth += 1,
                    Some(Tok::Punct(close @ (']' | ')' | '}'))) => {
                        if depth == 0 {
                            if *close == '}' {
                                break;
                            }
                            return Err(format!("unbalanced `{close}` in attribute `{key}`"));
                        }
                        depth -= 1;
                    }
                    Some(Tok::Punct(',')) if depth == 0 => break,
                    Some(_) => {}
                }
                c.pos += 1;
            }
            let toks = &c.toks[start..c.pos];
            if toks.is_empty() {
                return Err(format!("attribute `{key}` has no value"));
            }
            attrs.entries.push((key, toks));
            if c.eat('}') {
                return Ok(attrs);
            }
            c.expect(',', "between attributes")?;
        }
    }

    /// Parses attribute `key` with `f`, which must use up its tokens.
    fn get<T>(&mut self, key: &str, f: impl FnOnce(&mut Cursor<'t>, &str) -> R<T>) -> R<T> {
        let Some(i) = self.entries.iter().position(|(k, _)| *k == key) else {
            return Err(format!("`{}` needs attribute `{key}`", self.op));
        };
        let (_, toks) = self.entries.remove(i);
        let mut c = Cursor::new(toks);
        let what = format!("attribute `{key}`");
        let v = f(&mut c, &what)?;
        c.end(&format!("after the value of {what}"))?;
        Ok(v)
    }

    fn finish(self) -> R<()> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("`{}` has no attribute `{k}`", self.op)),
        }
    }
}

fn parse_op(name: &str, a: &mut Attrs<'_>, sy: &SymbolTable) -> R<Op> {
    let ints = |c: &mut Cursor<'_>, w: &str| c.list(w, |c| c.int(w));
    let axes = |c: &mut Cursor<'_>, w: &str| c.list(w, |c| c.index(w));
    let dims = |c: &mut Cursor<'_>, w: &str| c.dims(sy, w);
    let index = |c: &mut Cursor<'_>, w: &str| c.index(w);
    let int = |c: &mut Cursor<'_>, w: &str| c.int(w);
    let boolean = |c: &mut Cursor<'_>, w: &str| c.boolean(w);
    let float = |c: &mut Cursor<'_>, w: &str| c.float(w);
    let dtype = |c: &mut Cursor<'_>, w: &str| c.dtype(w);
    let kind = |c: &mut Cursor<'_>, w: &str| c.pool_kind(w);
    if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
        return Ok(Op::Unary(u));
    }
    if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
        return Ok(Op::Binary(b));
    }
    if let Some(kind) = ReduceKind::ALL.into_iter().find(|k| k.name() == name) {
        return Ok(Op::Reduce { kind, axes: a.get("axes", axes)?, keepdim: a.get("keepdim", boolean)? });
    }
    if let Some(kind) = [ArgKind::ArgMax, ArgKind::ArgMin].into_iter().find(|k| k.name() == name) {
        return Ok(Op::ArgReduce { kind, axis: a.get("axis", index)?, keepdim: a.get("keepdim", boolean)? });
    }
    Ok(match name {
        "where" => Op::Where,
        "matmul" => Op::MatMul,
        "attention" => Op::Attention(AttentionAttrs {
            scale: a.get("scale", |c, w| {
                let how = c.word(w)?;
                let v = c.call_arg(w)?;
                match how {
                    "mul" => Ok(AttentionScale::Mul(v)),
                    "div" => Ok(AttentionScale::Div(v)),
                    other => Err(format!("{w}: expected `mul(c)` or `div(c)`, found `{other}`")),
                }
            })?,
            masks: a.get("masks", |c, w| {
                c.list(w, |c| match c.word(w)? {
                    "add" => Ok(AttentionMask::Add),
                    "keep" => Ok(AttentionMask::Keep(c.call_arg(w)?)),
                    "fill" => Ok(AttentionMask::Fill(c.call_arg(w)?)),
                    other => Err(format!("{w}: expected `add`, `keep(v)` or `fill(v)`, found `{other}`")),
                })
            })?,
        }),
        "cast" => Op::Cast(a.get("to", dtype)?),
        "conv" => Op::Conv(ConvAttrs {
            stride: a.get("stride", ints)?,
            padding: a.get("padding", ints)?,
            dilation: a.get("dilation", ints)?,
            groups: a.get("groups", int)?,
            transposed: a.get("transposed", boolean)?,
            output_padding: a.get("output_padding", ints)?,
        }),
        "pool" => Op::Pool(PoolAttrs {
            kind: a.get("kind", kind)?,
            kernel: a.get("kernel", ints)?,
            stride: a.get("stride", ints)?,
            padding: a.get("padding", ints)?,
            dilation: a.get("dilation", ints)?,
            ceil_mode: a.get("ceil_mode", boolean)?,
            count_include_pad: a.get("count_include_pad", boolean)?,
        }),
        "adaptive_pool" => Op::AdaptivePool { kind: a.get("kind", kind)?, output_size: a.get("output_size", ints)? },
        "reshape" => Op::Reshape { shape: a.get("shape", dims)? },
        "permute" => Op::Permute { perm: a.get("perm", axes)? },
        "expand" => Op::Expand { shape: a.get("shape", dims)? },
        "slice" => Op::Slice {
            axis: a.get("axis", index)?,
            start: a.get("start", |c, w| c.dim(sy, w))?,
            end: a.get("end", |c, w| c.dim(sy, w))?,
            step: a.get("step", int)?,
        },
        "concat" => Op::Concat { axis: a.get("axis", index)? },
        "pad" => Op::Pad { pads: a.get("pads", |c, w| c.list(w, |c| c.pair(w)))?, value: a.get("value", float)? },
        "gather" => Op::Gather { axis: a.get("axis", index)? },
        "iota" => Op::Iota {
            shape: a.get("shape", dims)?,
            axis: a.get("axis", index)?,
            start: a.get("start", float)?,
            step: a.get("step", float)?,
            dtype: a.get("dtype", dtype)?,
        },
        "full" => {
            Op::Full { shape: a.get("shape", dims)?, value: a.get("value", float)?, dtype: a.get("dtype", dtype)? }
        }
        "cumsum" => Op::CumSum { axis: a.get("axis", index)? },
        "dim_value" => Op::DimValue { dim: a.get("dim", |c, w| c.dim(sy, w))?, dtype: a.get("dtype", dtype)? },
        other => return Err(format!("unknown op `{other}`")),
    })
}

/// Which part of the file the parser is in; declarations must come in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Start,
    Symbols,
    Values,
    Outputs,
}

struct Parser {
    graph: Option<Graph>,
    stage: Stage,
    /// Value ids by name, for operand lookup.
    values: HashMap<String, ValueId>,
}

impl Parser {
    fn line(&mut self, line: &str) -> R<()> {
        let toks = lex(line)?;
        let mut c = Cursor::new(&toks);
        let (stage, what) = match c.peek() {
            None => return Ok(()),
            Some(Tok::Word(w)) if w == "graph" => (Stage::Start, "`graph`"),
            Some(Tok::Word(w)) if w == "sym" => (Stage::Symbols, "`sym` lines"),
            Some(Tok::Word(w)) if w == "input" || w == "weight" => (Stage::Values, "`input` and `weight` lines"),
            Some(Tok::Value(_)) => (Stage::Values, "node lines"),
            Some(Tok::Word(w)) if w == "output" => (Stage::Outputs, "`output` lines"),
            Some(t) => {
                return Err(format!(
                    "expected a declaration (`graph`, `sym`, `input`, `weight`, `%name`, `output`), found {}",
                    t.describe()
                ))
            }
        };
        if stage == Stage::Start {
            if self.graph.is_some() {
                return Err("a second `graph` line".into());
            }
            c.keyword("graph")?;
            let name = match c.next() {
                Some(Tok::Word(w)) if is_bare_graph_name(w) => w.clone(),
                Some(Tok::Word(w)) => return Err(format!("graph name `{w}` must be an identifier or a quoted string")),
                Some(Tok::Str(s)) => s.clone(),
                _ => return Err("expected the graph's name after `graph`".into()),
            };
            c.end("after the graph name")?;
            self.graph = Some(Graph::new(name));
            self.stage = Stage::Symbols;
            return Ok(());
        }
        let Some(g) = self.graph.as_mut() else {
            return Err("the first declaration must be `graph NAME`".into());
        };
        if stage < self.stage {
            let after = match self.stage {
                Stage::Values => "`input`, `weight` and node lines",
                _ => "`output` lines",
            };
            return Err(format!("{what} must come before {after}"));
        }
        self.stage = stage;
        let values = &mut self.values;
        let define = |g: &Graph, values: &HashMap<String, ValueId>, name: &str| -> R<()> {
            if values.contains_key(name) || g.fresh_name(name) != name {
                return Err(format!("duplicate name %{name}"));
            }
            Ok(())
        };
        let operand = |values: &HashMap<String, ValueId>, name: &str| -> R<ValueId> {
            values
                .get(name)
                .copied()
                .ok_or_else(|| format!("unknown value %{name} (values must be defined before use)"))
        };
        match c.peek() {
            Some(Tok::Word(w)) if w == "sym" => {
                c.pos += 1;
                let name = c.word("a symbol name")?;
                if !is_symbol_name(name) {
                    return Err(format!("symbol name `{name}` is not an identifier ([A-Za-z_][A-Za-z0-9_]*)"));
                }
                if g.symbols.lookup(name).is_some() {
                    return Err(format!("symbol `{name}` is declared twice"));
                }
                c.keyword("in")?;
                c.expect('[', "to open the symbol's range")?;
                let min = c.int("the symbol's minimum")?;
                c.expect(',', "in the symbol's range")?;
                let max = match c.peek() {
                    Some(Tok::Word(w)) if w == "inf" => {
                        c.pos += 1;
                        None
                    }
                    _ => Some(c.int("the symbol's maximum (or `inf`)")?),
                };
                c.expect(']', "to close the symbol's range")?;
                c.end("after the symbol's range")?;
                g.symbols.intern(name, min, max);
            }
            Some(Tok::Word(w)) if w == "input" || w == "weight" => {
                c.pos += 1;
                let name = c.value("a value name")?;
                c.expect(':', &format!("after %{name}"))?;
                let ty = c.ty(&g.symbols)?;
                c.end("after the type")?;
                define(g, values, name)?;
                let v = if w == "input" { g.add_input(name, ty) } else { g.add_weight(name, ty) };
                values.insert(name.to_string(), v);
            }
            Some(Tok::Value(name)) => {
                c.pos += 1;
                c.expect(':', &format!("after %{name}"))?;
                let ty = c.ty(&g.symbols)?;
                c.expect('=', "after the result type")?;
                let op_name = c.word("an op name")?;
                let mut attrs = Attrs::read(&mut c, op_name)?;
                let op = parse_op(op_name, &mut attrs, &g.symbols)?;
                attrs.finish()?;
                let mut inputs = Vec::new();
                if let Some(Tok::Value(_)) = c.peek() {
                    loop {
                        inputs.push(operand(values, c.value("an operand")?)?);
                        if !c.eat(',') {
                            break;
                        }
                    }
                }
                let source = if c.eat('@') { Some(c.string("a source location after `@`")?.to_string()) } else { None };
                c.end("at the end of the node")?;
                define(g, values, name)?;
                let v = g.add_node_typed(op, inputs, name, ty, source);
                values.insert(name.to_string(), v);
            }
            _ => {
                c.keyword("output")?;
                let name = c.string("the output's name")?;
                let v = operand(values, c.value("the output value")?)?;
                c.end("after the output value")?;
                g.add_output(name, v);
            }
        }
        Ok(())
    }
}

/// Reads an op written by [`super::op_key`] (spaces are allowed, as in the text form).
pub fn parse_op_key(key: &str, symbols: &SymbolTable) -> Result<Op, String> {
    let toks = lex(key)?;
    let mut c = Cursor::new(&toks);
    let name = c.word("an op name")?;
    let mut attrs = Attrs::read(&mut c, name)?;
    let op = parse_op(name, &mut attrs, symbols)?;
    attrs.finish()?;
    match c.peek() {
        None => Ok(op),
        Some(t) => Err(format!("unexpected {} after the op `{name}`", t.describe())),
    }
}
