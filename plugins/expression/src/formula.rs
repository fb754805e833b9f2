//! A parsed expression: a tree over numbers and input slots, evaluated in
//! f64. The inputs are named once per formula, so evaluation indexes a
//! slice instead of looking names up.

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operator {
    Add,
    Subtract,
    Multiply,
    Divide,
    Remainder,
    Power,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Function {
    Abs,
    Ceil,
    Floor,
    Max,
    Min,
    Round,
    Sqrt,
}

/// How many arguments a function takes.
pub enum Arity {
    Exactly(usize),
    AtLeast(usize),
}

/// Every function, by name, sorted for the error that lists them.
pub const FUNCTIONS: &[(&str, Function, Arity)] = &[
    ("abs", Function::Abs, Arity::Exactly(1)),
    ("ceil", Function::Ceil, Arity::Exactly(1)),
    ("floor", Function::Floor, Arity::Exactly(1)),
    ("max", Function::Max, Arity::AtLeast(2)),
    ("min", Function::Min, Arity::AtLeast(2)),
    ("round", Function::Round, Arity::Exactly(1)),
    ("sqrt", Function::Sqrt, Arity::Exactly(1)),
];

#[derive(Debug, PartialEq)]
pub enum Node {
    Number(f64),
    /// Index into [`Formula::inputs`].
    Input(usize),
    Negate(Box<Node>),
    Binary(Operator, Box<Node>, Box<Node>),
    Call(Function, Vec<Node>),
}

#[derive(Debug, PartialEq)]
pub struct Formula {
    pub root: Node,
    /// Each name the expression reads, once, with the column of its first use.
    pub inputs: Vec<(String, usize)>,
}

impl Node {
    /// The value with `inputs[i]` for `Input(i)`.
    pub fn eval(&self, inputs: &[f64]) -> f64 {
        match self {
            Self::Number(number) => *number,
            Self::Input(slot) => inputs[*slot],
            Self::Negate(operand) => -operand.eval(inputs),
            Self::Binary(operator, left, right) => {
                let (left, right) = (left.eval(inputs), right.eval(inputs));
                match operator {
                    Operator::Add => left + right,
                    Operator::Subtract => left - right,
                    Operator::Multiply => left * right,
                    Operator::Divide => left / right,
                    Operator::Remainder => left % right,
                    Operator::Power => left.powf(right),
                }
            }
            Self::Call(function, arguments) => {
                let mut values = arguments.iter().map(|argument| argument.eval(inputs));
                let mut first = || values.next().expect("arity checked by the parser");
                match function {
                    Function::Abs => first().abs(),
                    Function::Ceil => first().ceil(),
                    Function::Floor => first().floor(),
                    Function::Round => first().round(),
                    Function::Sqrt => first().sqrt(),
                    Function::Max => values.fold(f64::NEG_INFINITY, f64::max),
                    Function::Min => values.fold(f64::INFINITY, f64::min),
                }
            }
        }
    }
}
