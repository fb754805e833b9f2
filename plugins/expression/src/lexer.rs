//! Splits an expression into tokens, each with the 1-based column (in
//! characters) where it starts, for error messages.

use std::fmt;

use crate::SyntaxError;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Number(f64),
    /// A tag, `value` or a function: `temp_1`, or backquoted for any other
    /// characters: `` `line-1/temp` ``.
    Name(String),
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Caret,
    Open,
    Close,
    Comma,
    End,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = match self {
            Self::Number(number) => return write!(f, "number `{number}`"),
            Self::Name(name) => return write!(f, "name `{name}`"),
            Self::End => return f.write_str("the end of the expression"),
            Self::Plus => "+",
            Self::Minus => "-",
            Self::Star => "*",
            Self::Slash => "/",
            Self::Percent => "%",
            Self::Caret => "^",
            Self::Open => "(",
            Self::Close => ")",
            Self::Comma => ",",
        };
        write!(f, "`{symbol}`")
    }
}

/// The tokens of `text`, ending with [`Token::End`] at the column after it.
pub fn tokens(text: &str) -> Result<Vec<(Token, usize)>, SyntaxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < chars.len() {
        let start = at;
        let column = start + 1;
        let taken = |at: &mut usize, accept: &dyn Fn(char) -> bool| {
            while *at < chars.len() && accept(chars[*at]) {
                *at += 1;
            }
            chars[start..*at].iter().collect::<String>()
        };
        let token = match chars[at] {
            c if c.is_whitespace() => {
                at += 1;
                continue;
            }
            c if c.is_ascii_digit() || c == '.' => {
                let mut text = taken(&mut at, &|c| c.is_ascii_digit() || c == '.');
                if at < chars.len() && matches!(chars[at], 'e' | 'E') {
                    at += 1;
                    if at < chars.len() && matches!(chars[at], '+' | '-') {
                        at += 1;
                    }
                    text = taken(&mut at, &|c| c.is_ascii_digit());
                }
                let number = text
                    .parse()
                    .map_err(|_| SyntaxError::new(column, format!("`{text}` is not a number")))?;
                Token::Number(number)
            }
            c if c.is_alphabetic() || c == '_' => {
                Token::Name(taken(&mut at, &|c| c.is_alphanumeric() || c == '_'))
            }
            '`' => {
                let close = chars[start + 1..]
                    .iter()
                    .position(|&c| c == '`')
                    .ok_or_else(|| SyntaxError::new(column, "unclosed backquote".into()))?;
                at = start + 1 + close + 1;
                let name: String = chars[start + 1..at - 1].iter().collect();
                if name.is_empty() {
                    return Err(SyntaxError::new(column, "empty tag name ``".into()));
                }
                Token::Name(name)
            }
            symbol => {
                at += 1;
                match symbol {
                    '+' => Token::Plus,
                    '-' => Token::Minus,
                    '*' => Token::Star,
                    '/' => Token::Slash,
                    '%' => Token::Percent,
                    '^' => Token::Caret,
                    '(' => Token::Open,
                    ')' => Token::Close,
                    ',' => Token::Comma,
                    other => {
                        return Err(SyntaxError::new(
                            column,
                            format!("unexpected character `{other}`"),
                        ));
                    }
                }
            }
        };
        tokens.push((token, column));
    }
    tokens.push((Token::End, chars.len() + 1));
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Token::*;

    #[test]
    fn splits_with_columns() {
        let cases: [(&str, Vec<(Token, usize)>); 4] = [
            ("", vec![(End, 1)]),
            (
                "value*0.1 + 2",
                vec![
                    (Name("value".into()), 1),
                    (Star, 6),
                    (Number(0.1), 7),
                    (Plus, 11),
                    (Number(2.0), 13),
                    (End, 14),
                ],
            ),
            (
                "max(`line-1/t`, 1.5e-3)",
                vec![
                    (Name("max".into()), 1),
                    (Open, 4),
                    (Name("line-1/t".into()), 5),
                    (Comma, 15),
                    (Number(1.5e-3), 17),
                    (Close, 23),
                    (End, 24),
                ],
            ),
            (
                "(a%b)^2",
                vec![
                    (Open, 1),
                    (Name("a".into()), 2),
                    (Percent, 3),
                    (Name("b".into()), 4),
                    (Close, 5),
                    (Caret, 6),
                    (Number(2.0), 7),
                    (End, 8),
                ],
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(tokens(text), Ok(expected), "{text:?}");
        }
    }
}
