//! Symbolic size expressions as the exporter writes them.
//!
//! Sizes arrive as SymPy `srepr` text (`Symbol('s77', positive=True, integer=True)`,
//! `Mul(Integer(2), Symbol('s0', ...))`, `Add(...)`, `Pow(..., Integer(2))`) or, in some
//! releases, as infix text (`2*s0 + 1`). Both become a [`Dim`] polynomial; symbols are interned
//! in the graph's symbol table (ranges are filled in from `range_constraints` beforehand).

use kiln_ir::{Dim, SymbolTable};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Str(String),
    Punct(char),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let st = i;
            while i < cs.len() && cs[i].is_ascii_digit() {
                i += 1;
            }
            let text: String = cs[st..i].iter().collect();
            out.push(Tok::Int(text.parse().map_err(|_| format!("integer `{text}` is too large"))?));
        } else if c.is_alphabetic() || c == '_' {
            let st = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(cs[st..i].iter().collect()));
        } else if c == '\'' || c == '"' {
            let st = i + 1;
            i += 1;
            while i < cs.len() && cs[i] != c {
                i += 1;
            }
            if i >= cs.len() {
                return Err("unterminated string".into());
            }
            out.push(Tok::Str(cs[st..i].iter().collect()));
            i += 1;
        } else if "()+-*,=".contains(c) {
            out.push(Tok::Punct(c));
            i += 1;
        } else {
            return Err(format!("unexpected character `{c}`"));
        }
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    pos: usize,
    symbols: &'a mut SymbolTable,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        match self.next() {
            Some(Tok::Punct(p)) if p == c => Ok(()),
            other => Err(format!("expected `{c}`, found {other:?}")),
        }
    }

    fn symbol(&mut self, name: &str) -> Dim {
        let id = match self.symbols.lookup(name) {
            Some(id) => id,
            None => self.symbols.intern(name, 0, None),
        };
        Dim::symbol(id)
    }

    /// Infix: sum of products.
    fn expr(&mut self) -> Result<Dim, String> {
        self.depth += 1;
        if self.depth > 64 {
            return Err("expression nested too deeply".into());
        }
        let mut neg = false;
        if self.peek() == Some(&Tok::Punct('-')) {
            self.next();
            neg = true;
        }
        let mut acc = self.product()?;
        if neg {
            acc = acc.scale(-1);
        }
        loop {
            match self.peek() {
                Some(Tok::Punct('+')) => {
                    self.next();
                    acc = acc.add(&self.product()?);
                }
                Some(Tok::Punct('-')) => {
                    self.next();
                    acc = acc.sub(&self.product()?);
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(acc)
    }

    fn product(&mut self) -> Result<Dim, String> {
        let mut acc = self.atom()?;
        while self.peek() == Some(&Tok::Punct('*')) {
            self.next();
            acc = acc.mul(&self.atom()?);
        }
        Ok(acc)
    }

    fn atom(&mut self) -> Result<Dim, String> {
        match self.next() {
            Some(Tok::Int(v)) => Ok(Dim::constant(v)),
            Some(Tok::Punct('(')) => {
                let d = self.expr()?;
                self.expect(')')?;
                Ok(d)
            }
            Some(Tok::Punct('-')) => Ok(self.atom()?.scale(-1)),
            Some(Tok::Ident(name)) => {
                if self.peek() == Some(&Tok::Punct('(')) {
                    self.call(&name)
                } else {
                    Ok(self.symbol(&name))
                }
            }
            other => Err(format!("unexpected token {other:?}")),
        }
    }

    /// SymPy constructor call: `Symbol('s0', ...)`, `Integer(3)`, `Add(a, b, ...)`, `Mul(...)`,
    /// `Pow(a, Integer(n))`.
    fn call(&mut self, func: &str) -> Result<Dim, String> {
        self.expect('(')?;
        let mut args: Vec<Dim> = Vec::new();
        let mut name: Option<String> = None;
        loop {
            match self.peek() {
                Some(Tok::Punct(')')) => {
                    self.next();
                    break;
                }
                Some(Tok::Punct(',')) => {
                    self.next();
                }
                Some(Tok::Str(_)) => {
                    if let Some(Tok::Str(s)) = self.next() {
                        name = Some(s);
                    }
                }
                Some(Tok::Ident(_)) if self.toks.get(self.pos + 1) == Some(&Tok::Punct('=')) => {
                    // keyword assumption such as `positive=True`: skip `key = value`
                    self.pos += 3;
                }
                None => return Err("unexpected end".into()),
                _ => args.push(self.expr()?),
            }
        }
        match func {
            "Symbol" => {
                let n = name.ok_or("Symbol without a name")?;
                Ok(self.symbol(&n))
            }
            "Integer" => args.into_iter().next().ok_or_else(|| "Integer without a value".into()),
            "Add" => Ok(args.iter().fold(Dim::constant(0), |a, b| a.add(b))),
            "Mul" => Ok(args.iter().fold(Dim::constant(1), |a, b| a.mul(b))),
            "Pow" => {
                let [base, exp] = <[Dim; 2]>::try_from(args).map_err(|_| "Pow takes two arguments")?;
                let e = exp.as_const().filter(|e| (0..=8).contains(e)).ok_or("only small integer powers are supported")?;
                Ok((0..e).fold(Dim::constant(1), |a, _| a.mul(&base)))
            }
            other => Err(format!("`{other}` is not supported in sizes")),
        }
    }
}

/// Parses one size expression into a polynomial, interning new symbols.
pub fn parse_sym_expr(text: &str, symbols: &mut SymbolTable) -> Result<Dim, String> {
    let toks = lex(text)?;
    let mut p = Parser { toks, pos: 0, symbols, depth: 0 };
    let d = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(format!("trailing input after position {}", p.pos));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srepr_and_infix() {
        let mut t = SymbolTable::default();
        let a = parse_sym_expr("Symbol('s77', positive=True, integer=True)", &mut t).unwrap();
        assert_eq!(a.display(&t).to_string(), "s77");
        let b = parse_sym_expr("Mul(Integer(4), Symbol('s77', positive=True, integer=True))", &mut t).unwrap();
        assert_eq!(b.display(&t).to_string(), "4*s77");
        let c = parse_sym_expr("Add(Mul(Integer(2), Symbol('s0')), Integer(-1))", &mut t).unwrap();
        assert_eq!(c.display(&t).to_string(), "2*s0-1");
        let d = parse_sym_expr("2*s0*s77 + 3", &mut t).unwrap();
        // Monomials list symbols in interning order (s77 was seen first).
        assert_eq!(d.display(&t).to_string(), "2*s77*s0+3");
        assert!(parse_sym_expr("FloorDiv(s0, 2)", &mut t).is_err());
        assert!(parse_sym_expr("((((", &mut t).is_err());
        assert!(parse_sym_expr(&"(".repeat(10000), &mut t).is_err());
    }
}
