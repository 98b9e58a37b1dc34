//! A tiny arithmetic expression language, evaluated a whole column at a time.
//!
//! Grammar (usual precedence, left-associative):
//! ```text
//! expr   = term   { ("+" | "-") term }
//! term   = factor { ("*" | "/") factor }
//! factor = "-" factor | number | name | "`" any text "`" | "(" expr ")"
//! ```

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Column(String),
    Neg(Box<Expr>),
    Binary(Op, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

impl Expr {
    pub fn parse(text: &str) -> Result<Expr, String> {
        let mut parser = Parser { text, pos: 0 };
        let expr = parser.expr()?;
        parser.skip_space();
        match parser.peek() {
            None => Ok(expr),
            Some(c) => Err(format!("unexpected `{c}` at offset {}", parser.pos)),
        }
    }

    /// The column names the expression reads, each once, in order of first use.
    pub fn columns(&self) -> Vec<&str> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a str>) {
            match e {
                Expr::Number(_) => {}
                Expr::Column(c) => {
                    if !out.contains(&c.as_str()) {
                        out.push(c)
                    }
                }
                Expr::Neg(a) => walk(a, out),
                Expr::Binary(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Evaluates over `rows` rows; `column` returns a column's values (`rows` long).
    pub fn eval<'a>(&self, rows: usize, column: &dyn Fn(&str) -> &'a [f64]) -> Vec<f64> {
        match self {
            Expr::Number(x) => vec![*x; rows],
            Expr::Column(c) => column(c).to_vec(),
            Expr::Neg(a) => {
                let mut v = a.eval(rows, column);
                v.iter_mut().for_each(|x| *x = -*x);
                v
            }
            Expr::Binary(op, a, b) => {
                let mut v = a.eval(rows, column);
                let w = b.eval(rows, column);
                let f = match op {
                    Op::Add => |x: f64, y: f64| x + y,
                    Op::Sub => |x: f64, y: f64| x - y,
                    Op::Mul => |x: f64, y: f64| x * y,
                    Op::Div => |x: f64, y: f64| x / y,
                };
                v.iter_mut().zip(&w).for_each(|(x, &y)| *x = f(*x, y));
                v
            }
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat('+') {
                Op::Add
            } else if self.eat('-') {
                Op::Sub
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut left = self.factor()?;
        loop {
            let op = if self.eat('*') {
                Op::Mul
            } else if self.eat('/') {
                Op::Div
            } else {
                return Ok(left);
            };
            left = Expr::Binary(op, Box::new(left), Box::new(self.factor()?));
        }
    }

    fn factor(&mut self) -> Result<Expr, String> {
        if self.eat('-') {
            return Ok(Expr::Neg(Box::new(self.factor()?)));
        }
        if self.eat('(') {
            let e = self.expr()?;
            return if self.eat(')') { Ok(e) } else { Err(format!("expected `)` at offset {}", self.pos)) };
        }
        if self.eat('`') {
            let rest = &self.text[self.pos..];
            let end = rest.find('`').ok_or("unclosed backtick")?;
            self.pos += end + 1;
            return Ok(Expr::Column(rest[..end].to_string()));
        }
        self.skip_space();
        let start = self.pos;
        let rest = &self.text[start..];
        match self.peek() {
            Some(c) if c.is_ascii_digit() || c == '.' => {
                let b = rest.as_bytes();
                let digits =
                    |from: usize| from + b[from..].iter().take_while(|c| c.is_ascii_digit() || **c == b'.').count();
                let mut len = digits(0);
                // An exponent, with an optional sign: `1e-3`.
                if matches!(b.get(len), Some(b'e' | b'E')) {
                    let sign = usize::from(matches!(b.get(len + 1), Some(b'+' | b'-')));
                    if b.get(len + 1 + sign).is_some_and(u8::is_ascii_digit) {
                        len = digits(len + 1 + sign);
                    }
                }
                self.pos += len;
                rest[..len].parse().map(Expr::Number).map_err(|_| format!("bad number `{}`", &rest[..len]))
            }
            Some(c) if c.is_alphabetic() || c == '_' => {
                let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                self.pos += len;
                Ok(Expr::Column(rest[..len].to_string()))
            }
            Some(c) => Err(format!("unexpected `{c}` at offset {start}")),
            None => Err("unexpected end of expression".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(text: &str) -> f64 {
        Expr::parse(text).unwrap().eval(1, &|_| &[2.0])[0]
    }

    #[test]
    fn precedence_and_associativity() {
        assert_eq!(eval("1 + 2 * 3"), 7.0);
        assert_eq!(eval("(1 + 2) * 3"), 9.0);
        assert_eq!(eval("8 / 2 / 2"), 2.0);
        assert_eq!(eval("-x * 3 - 1e-1"), -6.1);
        assert_eq!(eval("`a b` + 1"), 3.0);
    }

    #[test]
    fn errors() {
        assert!(Expr::parse("1 +").is_err());
        assert!(Expr::parse("(1").is_err());
        assert!(Expr::parse("1 2").is_err());
        assert!(Expr::parse("x $ y").is_err());
    }
}
