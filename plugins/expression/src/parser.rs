//! Recursive descent over the tokens, one function per precedence level:
//!
//! ```text
//! sum     = product (("+" | "-") product)*
//! product = unary (("*" | "/" | "%") unary)*
//! unary   = "-" unary | power
//! power   = primary ("^" unary)?          right-associative; -2^2 is -4
//! primary = number | name | name "(" sum ("," sum)* ")" | "(" sum ")"
//! ```

use crate::SyntaxError;
use crate::formula::{Arity, FUNCTIONS, Formula, Node, Operator};
use crate::lexer::{Token, tokens};

/// Bounds on what a formula may be: the parser, `eval` and dropping the
/// tree all recurse, and a plugin's stack is small. Far above any formula a
/// person writes.
const MAX_TOKENS: usize = 512;
const MAX_NESTING: usize = 64;

pub fn parse(text: &str) -> Result<Formula, SyntaxError> {
    let tokens = tokens(text)?;
    if let Some((_, column)) = tokens.get(MAX_TOKENS) {
        return Err(SyntaxError::new(
            *column,
            format!(
                "the expression is too long (at most {MAX_TOKENS} numbers, names and operators)"
            ),
        ));
    }
    let mut parser = Parser {
        tokens,
        at: 0,
        inputs: Vec::new(),
        nesting: 0,
    };
    let root = parser.sum()?;
    let (token, column) = parser.peek();
    if *token != Token::End {
        return Err(SyntaxError::new(
            column,
            format!("expected an operator or the end of the expression, found {token}"),
        ));
    }
    Ok(Formula {
        root,
        inputs: parser.inputs,
    })
}

struct Parser {
    tokens: Vec<(Token, usize)>,
    at: usize,
    inputs: Vec<(String, usize)>,
    /// `unary` calls in progress: every nesting (parentheses, arguments,
    /// signs, powers) goes through it.
    nesting: usize,
}

impl Parser {
    fn peek(&self) -> (&Token, usize) {
        let (token, column) = &self.tokens[self.at];
        (token, *column)
    }

    fn next(&mut self) -> (Token, usize) {
        let next = self.tokens[self.at].clone();
        // End stays put: it is always the last token.
        if next.0 != Token::End {
            self.at += 1;
        }
        next
    }

    fn sum(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.product()?;
        loop {
            let operator = match self.peek().0 {
                Token::Plus => Operator::Add,
                Token::Minus => Operator::Subtract,
                _ => return Ok(left),
            };
            self.next();
            left = Node::Binary(operator, Box::new(left), Box::new(self.product()?));
        }
    }

    fn product(&mut self) -> Result<Node, SyntaxError> {
        let mut left = self.unary()?;
        loop {
            let operator = match self.peek().0 {
                Token::Star => Operator::Multiply,
                Token::Slash => Operator::Divide,
                Token::Percent => Operator::Remainder,
                _ => return Ok(left),
            };
            self.next();
            left = Node::Binary(operator, Box::new(left), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Node, SyntaxError> {
        if self.nesting == MAX_NESTING {
            return Err(SyntaxError::new(
                self.peek().1,
                format!("nested too deeply (at most {MAX_NESTING} levels)"),
            ));
        }
        self.nesting += 1;
        let node = self.unary_unbounded();
        self.nesting -= 1;
        node
    }

    fn unary_unbounded(&mut self) -> Result<Node, SyntaxError> {
        if *self.peek().0 == Token::Minus {
            self.next();
            return Ok(Node::Negate(Box::new(self.unary()?)));
        }
        let base = self.primary()?;
        if *self.peek().0 != Token::Caret {
            return Ok(base);
        }
        self.next();
        Ok(Node::Binary(
            Operator::Power,
            Box::new(base),
            Box::new(self.unary()?),
        ))
    }

    fn primary(&mut self) -> Result<Node, SyntaxError> {
        match self.next() {
            (Token::Number(number), _) => Ok(Node::Number(number)),
            (Token::Name(name), column) if *self.peek().0 == Token::Open => {
                self.call(&name, column)
            }
            (Token::Name(name), column) => Ok(Node::Input(self.input(name, column))),
            (Token::Open, column) => {
                let inner = self.sum()?;
                self.close(column)?;
                Ok(inner)
            }
            (token, column) => Err(SyntaxError::new(
                column,
                format!("expected a number, a tag name, `(` or `-`, found {token}"),
            )),
        }
    }

    /// `name(...)`, with the `(` next.
    fn call(&mut self, name: &str, column: usize) -> Result<Node, SyntaxError> {
        let Some((_, function, arity)) = FUNCTIONS.iter().find(|(known, ..)| *known == name) else {
            let known: Vec<&str> = FUNCTIONS.iter().map(|(known, ..)| *known).collect();
            return Err(SyntaxError::new(
                column,
                format!("unknown function `{name}`; functions: {}", known.join(", ")),
            ));
        };
        let (_, open) = self.next();
        let mut arguments = vec![self.sum()?];
        while *self.peek().0 == Token::Comma {
            self.next();
            arguments.push(self.sum()?);
        }
        self.close(open)?;
        let count = arguments.len();
        let (fits, wanted) = match arity {
            Arity::Exactly(n) => (count == *n, format!("{n}")),
            Arity::AtLeast(n) => (count >= *n, format!("at least {n}")),
        };
        if !fits {
            let plural = if wanted == "1" { "" } else { "s" };
            return Err(SyntaxError::new(
                column,
                format!("`{name}` takes {wanted} argument{plural}, found {count}"),
            ));
        }
        Ok(Node::Call(*function, arguments))
    }

    /// Expects the `)` matching the `(` at `open`.
    fn close(&mut self, open: usize) -> Result<(), SyntaxError> {
        match self.next() {
            (Token::Close, _) => Ok(()),
            (token, column) => Err(SyntaxError::new(
                column,
                format!("expected `)` to close the `(` at column {open}, found {token}"),
            )),
        }
    }

    /// The slot of input `name`, adding it on first use.
    fn input(&mut self, name: String, column: usize) -> usize {
        match self.inputs.iter().position(|(known, _)| *known == name) {
            Some(slot) => slot,
            None => {
                self.inputs.push((name, column));
                self.inputs.len() - 1
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluates_with_precedence_and_associativity() {
        let cases = [
            ("value * 0.1 + 2", 652.0, 67.2),
            ("2 + 3 * 4", 0.0, 14.0),
            ("(2 + 3) * 4", 0.0, 20.0),
            ("10 - 4 - 3", 0.0, 3.0),
            ("2 ^ 3 ^ 2", 0.0, 512.0),
            ("-2 ^ 2", 0.0, -4.0),
            ("2 ^ -1", 0.0, 0.5),
            ("--value", 5.0, 5.0),
            ("value % 7", 23.0, 2.0),
            ("1e3 / value", 8.0, 125.0),
            ("max(value, 3, -1) + min(4, value)", 2.0, 5.0),
            (
                "abs(-value) + sqrt(16) + round(2.5) + floor(-1.5) + ceil(1.2)",
                1.0,
                8.0,
            ),
        ];
        for (text, value, expected) in cases {
            let formula = parse(text).unwrap();
            let inputs: Vec<f64> = formula.inputs.iter().map(|_| value).collect();
            assert_eq!(
                formula.root.eval(&inputs),
                expected,
                "{text} with value {value}"
            );
        }
    }

    #[test]
    fn names_each_input_once_with_its_first_column() {
        let formula = parse("(a + `b/c`) / 2 + a").unwrap();
        assert_eq!(formula.inputs, [("a".into(), 2), ("b/c".into(), 6)]);
    }

    #[test]
    fn errors_give_the_column_and_what_was_expected() {
        let cases = [
            (
                "",
                1,
                "expected a number, a tag name, `(` or `-`, found the end of the expression",
            ),
            (
                "value *",
                8,
                "expected a number, a tag name, `(` or `-`, found the end of the expression",
            ),
            (
                "value * * 2",
                9,
                "expected a number, a tag name, `(` or `-`, found `*`",
            ),
            (
                "(a + b",
                7,
                "expected `)` to close the `(` at column 1, found the end of the expression",
            ),
            (
                "max(a, b",
                9,
                "expected `)` to close the `(` at column 4, found the end of the expression",
            ),
            (
                "a + b)",
                6,
                "expected an operator or the end of the expression, found `)`",
            ),
            (
                "2 3",
                3,
                "expected an operator or the end of the expression, found number `3`",
            ),
            (
                "a b",
                3,
                "expected an operator or the end of the expression, found name `b`",
            ),
            (
                "avg(a, b)",
                1,
                "unknown function `avg`; functions: abs, ceil, floor, max, min, round, sqrt",
            ),
            ("1 + sqrt(a, b)", 5, "`sqrt` takes 1 argument, found 2"),
            ("min(a)", 1, "`min` takes at least 2 arguments, found 1"),
            (
                "f()",
                1,
                "unknown function `f`; functions: abs, ceil, floor, max, min, round, sqrt",
            ),
            (
                "max()",
                5,
                "expected a number, a tag name, `(` or `-`, found `)`",
            ),
            ("a $ b", 3, "unexpected character `$`"),
            ("1.2.3", 1, "`1.2.3` is not a number"),
            ("2e", 1, "`2e` is not a number"),
            ("a + `b", 5, "unclosed backquote"),
            ("``", 1, "empty tag name ``"),
        ];
        for (text, column, message) in cases {
            assert_eq!(
                parse(text),
                Err(SyntaxError::new(column, message.to_string())),
                "{text:?}"
            );
        }
    }

    #[test]
    fn refuses_formulas_that_would_exhaust_the_stack() {
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        let error = parse(&deep).unwrap_err().to_string();
        assert!(error.contains("nested too deeply"), "{error}");
        let signs = format!("{}1", "-".repeat(100));
        assert!(parse(&signs).unwrap_err().to_string().contains("nested"));
        let long = format!("{}1", "1+".repeat(1_000));
        let error = parse(&long).unwrap_err().to_string();
        assert!(error.contains("too long"), "{error}");
        assert!(parse(&format!("{}1{}", "(".repeat(60), ")".repeat(60))).is_ok());
    }

    mod fuzz {
        //! Bad input never panics the parser or the evaluator: arbitrary
        //! text, and soups of the grammar's own tokens (which get further).

        use super::*;
        use proptest::prelude::*;

        fn token_soup() -> impl Strategy<Value = String> {
            let token = proptest::sample::select(vec![
                "(", ")", "-", "+", "*", "/", "%", "^", ",", " ", "value", "a", "max", "min",
                "sqrt", "abs", "round", "1", "0", "2.5", "1e3", "1e309", ".", "_",
            ]);
            proptest::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
        }

        fn evaluates_without_panic(text: &str) {
            if let Ok(formula) = parse(text) {
                let inputs: Vec<f64> = formula.inputs.iter().map(|_| 1.5).collect();
                let _ = formula.root.eval(&inputs);
            }
        }

        proptest! {
            #[test]
            fn arbitrary_text_is_a_formula_or_an_error(text in "\\PC{0,60}") {
                evaluates_without_panic(&text);
            }

            #[test]
            fn token_soup_is_a_formula_or_an_error(text in token_soup()) {
                evaluates_without_panic(&text);
            }
        }
    }
}
