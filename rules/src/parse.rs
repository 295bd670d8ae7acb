//! The lexer and the recursive-descent parser of rule files.
//!
//! The parser never panics on any input and reports every error it finds:
//! after an error it skips to the next `rule` or `list` at the start of a
//! line and goes on.

use verdict_core::Action;

use crate::ast::{BinOp, Expr, ExprKind, File, Item, ListBody, ListDef, ListRef, Lit, RuleDef};
use crate::diag::{Diagnostic, Diagnostics, Source, Span};

/// Rule files larger than this are refused unread.
pub const MAX_SOURCE_BYTES: usize = 4 << 20;
/// Deeper nesting than this is refused (it would only come from a
/// generated or hostile file, and recursion must stay bounded).
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Number(f64),
    Str(String),
    Sym(&'static str),
    Eof,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    span: Span,
    /// First token on its line.
    line_start: bool,
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Number(n) => format!("number `{n}`"),
        Tok::Str(_) => "a string".into(),
        Tok::Sym(s) => format!("`{s}`"),
        Tok::Eof => "the end of the file".into(),
    }
}

const SYMBOLS: [&str; 16] = [
    "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "(", ")", "[", "]", ",", ":",
];

fn lex(src: &Source, diags: &mut Diagnostics) -> Vec<Token> {
    let text: &str = &src.text;
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'#' {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        let start = i;
        let tok = if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Tok::Ident(text[start..i].to_owned())
        } else if c.is_ascii_digit() {
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < bytes.len() && bytes[i] == b'.' && bytes[i + 1].is_ascii_digit() {
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                let mut j = i + 1;
                if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
                    j += 1;
                }
                if j < bytes.len() && bytes[j].is_ascii_digit() {
                    i = j;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            match text[start..i].parse::<f64>() {
                Ok(n) if n.is_finite() => Tok::Number(n),
                _ => {
                    diags.push(Diagnostic::at(
                        src,
                        Span::new(start, i),
                        "this number is out of range",
                    ));
                    Tok::Number(0.0)
                }
            }
        } else if c == b'"' {
            i += 1;
            let mut s = String::new();
            let mut closed = false;
            while i < bytes.len() {
                let ch = text[i..].chars().next().unwrap_or('\0');
                match ch {
                    '"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    '\n' => break,
                    '\\' => {
                        let next = text[i + 1..].chars().next();
                        let esc = match next {
                            Some('"') => Some('"'),
                            Some('\\') => Some('\\'),
                            Some('n') => Some('\n'),
                            Some('t') => Some('\t'),
                            _ => None,
                        };
                        match esc {
                            Some(e) => {
                                s.push(e);
                                i += 2;
                            }
                            None => {
                                let w = 1 + next.map_or(0, char::len_utf8);
                                diags.push(
                                    Diagnostic::at(
                                        src,
                                        Span::new(i, i + w),
                                        "unknown escape in a string",
                                    )
                                    .with_help(r#"strings know \" \\ \n and \t"#),
                                );
                                i += w;
                            }
                        }
                    }
                    ch => {
                        s.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            if !closed {
                diags.push(
                    Diagnostic::at(src, Span::new(start, i), "this string is not closed")
                        .with_help("close it with `\"` on the same line"),
                );
            }
            Tok::Str(s)
        } else if let Some(sym) = SYMBOLS.iter().find(|s| text[i..].starts_with(**s)) {
            i += sym.len();
            Tok::Sym(sym)
        } else if c == b'=' || c == b'.' {
            i += 1;
            Tok::Sym(if c == b'=' { "=" } else { "." })
        } else {
            let ch = text[i..].chars().next().unwrap_or('\0');
            i += ch.len_utf8().max(1);
            diags.push(Diagnostic::at(
                src,
                Span::new(start, i),
                format!("unexpected character `{}`", ch.escape_debug()),
            ));
            continue;
        };
        out.push(Token {
            tok,
            span: Span::new(start, i),
            line_start,
        });
        line_start = false;
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span::new(text.len(), text.len()),
        line_start: true,
    });
    out
}

/// Raised inside the parser to abandon the current item.
struct Bail;

struct Parser<'a> {
    src: &'a Source,
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    diags: &'a mut Diagnostics,
}

type P<T> = Result<T, Bail>;

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn span(&self) -> Span {
        self.toks[self.pos].span
    }

    fn prev_span(&self) -> Span {
        self.toks[self.pos.saturating_sub(1)].span
    }

    fn bump(&mut self) -> Token {
        let t = self.toks[self.pos].clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }

    fn is_sym(&self, sym: &str) -> bool {
        matches!(self.peek(), Tok::Sym(s) if *s == sym)
    }

    fn error<T>(&mut self, what: &str) -> P<T> {
        let found = describe(self.peek());
        let d = Diagnostic::at(
            self.src,
            self.span(),
            format!("expected {what}, found {found}"),
        );
        self.diags.push(d);
        Err(Bail)
    }

    fn expect_kw(&mut self, kw: &str) -> P<Span> {
        if self.is_kw(kw) {
            Ok(self.bump().span)
        } else {
            self.error(&format!("`{kw}`"))
        }
    }

    fn expect_sym(&mut self, sym: &str) -> P<Span> {
        if self.is_sym(sym) {
            Ok(self.bump().span)
        } else {
            self.error(&format!("`{sym}`"))
        }
    }

    /// Expects the bracket that closes the one at token `open`. When it is
    /// not there and nothing later in the item closes it, the error also
    /// points at where it was opened: the end of a rule is rarely where the
    /// mistake is.
    fn expect_close(&mut self, close: &'static str, open: usize) -> P<Span> {
        if self.is_sym(close) {
            return Ok(self.bump().span);
        }
        let found = describe(self.peek());
        let mut d = Diagnostic::at(
            self.src,
            self.span(),
            format!("expected `{close}`, found {found}"),
        );
        if !self.closed_later(open) {
            d = d
                .with_label(
                    self.src,
                    self.toks[open].span,
                    "unclosed delimiter opened here",
                )
                .with_help(format!("close it with `{close}`"));
        }
        self.diags.push(d);
        Err(Bail)
    }

    /// Whether the bracket at token `open` is closed before the next item.
    fn closed_later(&self, open: usize) -> bool {
        let Tok::Sym(opening) = self.toks[open].tok else {
            return false;
        };
        let closing = if opening == "(" { ")" } else { "]" };
        let mut depth = 0usize;
        for t in &self.toks[open..] {
            match &t.tok {
                Tok::Sym(s) if *s == opening => depth += 1,
                Tok::Sym(s) if *s == closing => {
                    depth -= 1;
                    if depth == 0 {
                        return true;
                    }
                }
                Tok::Ident(s) if t.line_start && (s == "rule" || s == "list") => return false,
                Tok::Eof => return false,
                _ => {}
            }
        }
        false
    }

    fn name(&mut self, what: &str) -> P<(String, Span)> {
        match self.peek().clone() {
            Tok::Ident(s) if !is_keyword(&s) => {
                let span = self.bump().span;
                Ok((s, span))
            }
            _ => self.error(what),
        }
    }

    fn string(&mut self, what: &str) -> P<(String, Span)> {
        match self.peek().clone() {
            Tok::Str(s) => {
                let span = self.bump().span;
                Ok((s, span))
            }
            _ => self.error(what),
        }
    }

    /// Skips to the next `rule` or `list` that starts a line.
    fn recover(&mut self) {
        if !matches!(self.peek(), Tok::Eof) {
            self.bump();
        }
        loop {
            let t = &self.toks[self.pos];
            match &t.tok {
                Tok::Eof => return,
                Tok::Ident(s) if t.line_start && (s == "rule" || s == "list") => return,
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn file(&mut self) -> File {
        let mut items = Vec::new();
        loop {
            let r = match self.peek() {
                Tok::Eof => break,
                Tok::Ident(s) if s == "rule" => self.rule().map(Item::Rule),
                Tok::Ident(s) if s == "list" => self.list().map(Item::List),
                _ => self.error("`rule` or `list`"),
            };
            match r {
                Ok(item) => items.push(item),
                Err(Bail) => self.recover(),
            }
        }
        File { items }
    }

    fn list(&mut self) -> P<ListDef> {
        self.expect_kw("list")?;
        let (name, name_span) = self.name("a list name")?;
        let body = if self.is_kw("from") {
            self.bump();
            let (path, span) = self.string("a file name in quotes")?;
            ListBody::File(path, span)
        } else if self.is_sym("=") {
            self.bump();
            ListBody::Inline(self.literal_list()?)
        } else {
            return self.error("`=` or `from`");
        };
        Ok(ListDef {
            name,
            name_span,
            body,
        })
    }

    fn literal_list(&mut self) -> P<Vec<(Lit, Span)>> {
        let open = self.pos;
        self.expect_sym("[")?;
        let mut items = vec![self.literal()?];
        while self.is_sym(",") {
            self.bump();
            items.push(self.literal()?);
        }
        self.expect_close("]", open)?;
        Ok(items)
    }

    fn literal(&mut self) -> P<(Lit, Span)> {
        let start = self.span();
        let negative = self.is_sym("-");
        if negative {
            self.bump();
        }
        let lit = match self.peek().clone() {
            Tok::Number(n) => Lit::Number(if negative { -n } else { n }),
            Tok::Str(s) if !negative => Lit::Str(s),
            Tok::Ident(s) if !negative && s == "true" => Lit::Bool(true),
            Tok::Ident(s) if !negative && s == "false" => Lit::Bool(false),
            _ => return self.error("a literal (number, string, true or false)"),
        };
        let end = self.bump().span;
        Ok((lit, start.to(end)))
    }

    fn rule(&mut self) -> P<RuleDef> {
        self.expect_kw("rule")?;
        let (name, name_span) = self.name("a rule name")?;
        let mut priority = 0;
        let mut shadow = false;
        loop {
            if self.is_kw("priority") {
                self.bump();
                let negative = self.is_sym("-");
                if negative {
                    self.bump();
                }
                match self.peek().clone() {
                    Tok::Number(n) if n.fract() == 0.0 && n.abs() < 1e15 => {
                        self.bump();
                        priority = if negative { -(n as i64) } else { n as i64 };
                    }
                    _ => return self.error("a whole number after `priority`"),
                }
            } else if self.is_kw("shadow") {
                self.bump();
                shadow = true;
            } else {
                break;
            }
        }
        self.expect_sym(":")?;
        let action = match self.peek() {
            Tok::Ident(s) if s == "approve" => Action::Approve,
            Tok::Ident(s) if s == "review" => Action::Review,
            Tok::Ident(s) if s == "deny" => Action::Deny,
            _ => return self.error("`approve`, `review` or `deny`"),
        };
        self.bump();
        self.expect_kw("if")?;
        let cond = self.expr()?;
        let reason = if self.is_kw("reason") {
            self.bump();
            Some(self.string("the reason in quotes")?.0)
        } else {
            None
        };
        match self.peek() {
            Tok::Eof => {}
            Tok::Ident(s) if s == "rule" || s == "list" => {}
            _ => return self.error("`reason`, or the next `rule` or `list`"),
        }
        Ok(RuleDef {
            name,
            name_span,
            priority,
            shadow,
            action,
            cond,
            reason,
        })
    }

    pub fn expr(&mut self) -> P<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let d = Diagnostic::at(self.src, self.span(), "this expression nests too deeply")
                .with_help(format!("at most {MAX_DEPTH} levels; split the rule"));
            self.diags.push(d);
            return Err(Bail);
        }
        let r = self.or();
        self.depth -= 1;
        r
    }

    fn binary(lhs: Expr, op: BinOp, rhs: Expr) -> Expr {
        let span = lhs.span.to(rhs.span);
        Expr {
            kind: ExprKind::Binary {
                op,
                lhs: Box::new(lhs),
                rhs: Box::new(rhs),
            },
            span,
        }
    }

    fn or(&mut self) -> P<Expr> {
        let mut e = self.and()?;
        while self.is_kw("or") {
            self.bump();
            let rhs = self.and()?;
            e = Self::binary(e, BinOp::Or, rhs);
        }
        Ok(e)
    }

    fn and(&mut self) -> P<Expr> {
        let mut e = self.not()?;
        while self.is_kw("and") {
            self.bump();
            let rhs = self.not()?;
            e = Self::binary(e, BinOp::And, rhs);
        }
        Ok(e)
    }

    fn not(&mut self) -> P<Expr> {
        if self.is_kw("not") {
            let start = self.bump().span;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.error("a shallower expression");
            }
            let inner = self.not();
            self.depth -= 1;
            let inner = inner?;
            let span = start.to(inner.span);
            return Ok(Expr {
                kind: ExprKind::Not(Box::new(inner)),
                span,
            });
        }
        self.cmp()
    }

    fn cmp(&mut self) -> P<Expr> {
        let lhs = self.sum()?;
        let op = match self.peek() {
            Tok::Sym("==") => Some(BinOp::Eq),
            Tok::Sym("!=") => Some(BinOp::Ne),
            Tok::Sym("<") => Some(BinOp::Lt),
            Tok::Sym("<=") => Some(BinOp::Le),
            Tok::Sym(">") => Some(BinOp::Gt),
            Tok::Sym(">=") => Some(BinOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let rhs = self.sum()?;
            return Ok(Self::binary(lhs, op, rhs));
        }
        let negated = self.is_kw("not") && {
            let next = &self.toks[(self.pos + 1).min(self.toks.len() - 1)].tok;
            matches!(next, Tok::Ident(s) if s == "in")
        };
        if negated {
            self.bump();
        }
        if self.is_kw("in") {
            self.bump();
            let list = if self.is_sym("[") {
                ListRef::Inline(self.literal_list()?)
            } else {
                let (n, s) = self.name("a list name or `[`")?;
                ListRef::Named(n, s)
            };
            let span = lhs.span.to(self.prev_span());
            return Ok(Expr {
                kind: ExprKind::In {
                    value: Box::new(lhs),
                    list,
                    negated,
                },
                span,
            });
        }
        Ok(lhs)
    }

    fn sum(&mut self) -> P<Expr> {
        let mut e = self.product()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(e),
            };
            self.bump();
            let rhs = self.product()?;
            e = Self::binary(e, op, rhs);
        }
    }

    fn product(&mut self) -> P<Expr> {
        let mut e = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                _ => return Ok(e),
            };
            self.bump();
            let rhs = self.unary()?;
            e = Self::binary(e, op, rhs);
        }
    }

    fn unary(&mut self) -> P<Expr> {
        if self.is_sym("-") {
            let start = self.bump().span;
            // `-5` is the literal minus five.
            if let Tok::Number(n) = *self.peek() {
                let end = self.bump().span;
                return Ok(Expr {
                    kind: ExprKind::Lit(Lit::Number(-n)),
                    span: start.to(end),
                });
            }
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.error("a shallower expression");
            }
            let inner = self.unary();
            self.depth -= 1;
            let inner = inner?;
            let span = start.to(inner.span);
            return Ok(Expr {
                kind: ExprKind::Neg(Box::new(inner)),
                span,
            });
        }
        self.atom()
    }

    fn atom(&mut self) -> P<Expr> {
        let start = self.span();
        match self.peek().clone() {
            Tok::Number(n) => {
                self.bump();
                Ok(Expr {
                    kind: ExprKind::Lit(Lit::Number(n)),
                    span: start,
                })
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr {
                    kind: ExprKind::Lit(Lit::Str(s)),
                    span: start,
                })
            }
            Tok::Sym("(") => {
                let open = self.pos;
                self.bump();
                let e = self.expr()?;
                self.expect_close(")", open)?;
                Ok(e)
            }
            Tok::Ident(s) if s == "true" || s == "false" => {
                self.bump();
                Ok(Expr {
                    kind: ExprKind::Lit(Lit::Bool(s == "true")),
                    span: start,
                })
            }
            Tok::Ident(s) if !is_keyword(&s) => {
                self.bump();
                if self.is_sym("(") {
                    let open = self.pos;
                    self.bump();
                    let mut args = Vec::new();
                    if !self.is_sym(")") {
                        args.push(self.expr()?);
                        while self.is_sym(",") {
                            self.bump();
                            args.push(self.expr()?);
                        }
                    }
                    let end = self.expect_close(")", open)?;
                    return Ok(Expr {
                        kind: ExprKind::Call { name: s, args },
                        span: start.to(end),
                    });
                }
                let mut segments = vec![s];
                let mut end = start;
                while self.is_sym(".") {
                    self.bump();
                    match self.peek().clone() {
                        Tok::Ident(seg) => {
                            end = self.bump().span;
                            segments.push(seg);
                        }
                        _ => return self.error("a name after `.`"),
                    }
                }
                Ok(Expr {
                    kind: ExprKind::Path(segments),
                    span: start.to(end),
                })
            }
            _ => self.error("an expression"),
        }
    }
}

const KEYWORDS: [&str; 16] = [
    "list", "rule", "from", "priority", "shadow", "approve", "review", "deny", "if", "reason",
    "and", "or", "not", "in", "true", "false",
];

fn is_keyword(s: &str) -> bool {
    KEYWORDS.contains(&s)
}

/// Parses one rule file; errors are appended to `diags`, and the items that
/// parsed are returned either way.
pub fn parse_file(src: &Source, diags: &mut Diagnostics) -> File {
    if src.text.len() > MAX_SOURCE_BYTES {
        diags.push(Diagnostic::at(
            src,
            Span::new(0, 0),
            format!(
                "this rule file is {} bytes, more than the {MAX_SOURCE_BYTES} allowed",
                src.text.len()
            ),
        ));
        return File::default();
    }
    let toks = lex(src, diags);
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        diags,
    };
    p.file()
}

/// Parses a single expression (a feature filter, say).
pub fn parse_expr(src: &Source, diags: &mut Diagnostics) -> Option<Expr> {
    if src.text.len() > MAX_SOURCE_BYTES {
        diags.push(Diagnostic::at(
            src,
            Span::new(0, 0),
            "this expression is too long",
        ));
        return None;
    }
    let toks = lex(src, diags);
    let mut p = Parser {
        src,
        toks,
        pos: 0,
        depth: 0,
        diags,
    };
    let e = p.expr().ok()?;
    if !matches!(p.peek(), Tok::Eof) {
        let _: P<()> = p.error("the end of the expression");
        return None;
    }
    Some(e)
}
