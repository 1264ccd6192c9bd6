//! Every limit a GraphQL request meets before the expensive work, in one place.
//!
//! A request is checked in three steps, each before the one that could cost:
//! 1. the HTTP body or websocket message size (in `http`, with
//!    [`MAX_BODY_BYTES`]), before anything is parsed;
//! 2. the query text ([`check_text`]): length, tokens and bracket nesting,
//!    before async-graphql's recursive parser sees it (2,000 nested `[` in a
//!    literal overflowed a worker's stack and aborted the process);
//! 3. the parsed document ([`check_document`]), with every fragment spread
//!    counted as often as it is used (a fragment that spreads the next one
//!    twice, 27 levels deep, made validation run for 46 s): fields, depth,
//!    aliases, directives, root fields and password operations; then every
//!    string argument is checked for control characters.
//!
//! What remains, async-graphql's validation (including the complexity
//! budget), is then linear in at most [`MAX_FIELDS`] fields.
//!
//! A refused request is `VALIDATION` with `extensions.field` `"query"` (or
//! `"body"`) and `extensions.limit` naming the limit. The values follow
//! graphql-armor's and Apollo Router's defaults where keyledger has no reason
//! to differ.
use std::collections::HashMap;

use async_graphql_value::{ConstValue, Value};

use async_graphql::{
    ServerError, Variables,
    parser::types::{ExecutableDocument, Selection, SelectionSet},
};

/// Largest HTTP body or websocket message (Apollo Router's default): the
/// largest legitimate request, a dashboard query with its variables, is a few
/// kilobytes.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Longest query text, in characters (graphql-armor's default).
pub const MAX_QUERY_CHARS: usize = 15_000;
/// Longest query string of a `GET /graphql` URL, in bytes: room for a query
/// of [`MAX_QUERY_CHARS`] once percent-encoded, with its variables, and
/// within what proxies and CDNs pass (many stop near 32 KiB).
pub const MAX_QUERY_STRING_BYTES: usize = 32 * 1024;
/// Most lexical tokens in a query text; the dashboard's largest query has a
/// few hundred, GraphiQL's introspection query about 400.
pub const MAX_TOKENS: usize = 5_000;
/// Deepest nesting of `[` and `{` inside arguments and variable defaults.
/// No input of the schema nests more than 3 levels.
pub const MAX_LITERAL_NESTING: usize = 32;
/// Deepest nesting of selection sets, inline fragments and fragment spreads,
/// counted in the text and again through fragments. Far below what the
/// parser and the validator can recurse through safely, far above
/// [`MAX_DEPTH`].
pub const MAX_SELECTION_NESTING: usize = 32;
/// Deepest field selection outside introspection.
pub const MAX_DEPTH: usize = 12;
/// Deepest field selection under `__schema` or `__type`: graphql-js's
/// introspection query (GraphiQL's, Apollo's, codegen tools') follows
/// `ofType` nine times, 15 fields deep. Introspection resolvers read the
/// in-memory schema only, so the deeper allowance costs no database work;
/// [`MAX_FIELDS`] still bounds their number.
pub const MAX_INTROSPECTION_DEPTH: usize = 16;
/// Cost budget per request. A field costs 1; a list of `first: n` costs n
/// times its selection, so 20 orders × 100 keys × 4 fields fits, 100 × 100 × 4 does not.
pub const MAX_COMPLEXITY: usize = 10_000;
/// Most fields selected, each fragment counted as often as it is spread:
/// introspection selects about 200.
pub const MAX_FIELDS: usize = 1_000;
/// Most aliased fields in a request (aliases let one request repeat an
/// expensive field, e.g. a hundred `signIn`s to guess passwords).
pub const MAX_ALIASES: usize = 30;
/// Most fields at the root of an operation.
pub const MAX_ROOT_FIELDS: usize = 20;
/// Most directives in a request (graphql-armor's default).
pub const MAX_DIRECTIVES: usize = 50;
/// Operations that hash a password (argon2id: 19 MiB and tens of
/// milliseconds each) allowed in one request.
pub const MAX_PASSWORD_OPERATIONS: usize = 1;

/// Root fields that hash or verify a password.
const PASSWORD_OPERATIONS: &[&str] = &[
    "signIn",
    "signUp",
    "changePassword",
    "changeEmail",
    "resetPassword",
];

/// Arguments (and input fields) of free text, where TAB, LF and CR are fine.
const FREE_TEXT: &[&str] = &["message", "description", "reason"];

/// Root fields whose selections are counted against
/// [`MAX_INTROSPECTION_DEPTH`] rather than [`MAX_DEPTH`].
const INTROSPECTION_FIELDS: &[&str] = &["__schema", "__type"];

/// A limit a request can exceed; its name is `extensions.limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Body,
    QueryString,
    QueryLength,
    Tokens,
    LiteralNesting,
    SelectionNesting,
    Depth,
    Complexity,
    Fields,
    Aliases,
    RootFields,
    Directives,
    PasswordOperations,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Limit::Body => "body",
            Limit::QueryString => "queryString",
            Limit::QueryLength => "queryLength",
            Limit::Tokens => "tokens",
            Limit::LiteralNesting => "literalNesting",
            Limit::SelectionNesting => "selectionNesting",
            Limit::Depth => "depth",
            Limit::Complexity => "complexity",
            Limit::Fields => "fields",
            Limit::Aliases => "aliases",
            Limit::RootFields => "rootFields",
            Limit::Directives => "directives",
            Limit::PasswordOperations => "passwordOperations",
        }
    }

    fn message(self) -> String {
        match self {
            Limit::Body => format!("the request body may be at most {MAX_BODY_BYTES} bytes"),
            Limit::QueryString => {
                format!(
                    "a GET request's query string may be at most {MAX_QUERY_STRING_BYTES} bytes"
                )
            }
            Limit::QueryLength => format!("a query may be at most {MAX_QUERY_CHARS} characters"),
            Limit::Tokens => format!("a query may have at most {MAX_TOKENS} tokens"),
            Limit::LiteralNesting => {
                format!("argument values may nest at most {MAX_LITERAL_NESTING} levels")
            }
            Limit::SelectionNesting => {
                format!("selections and fragments may nest at most {MAX_SELECTION_NESTING} levels")
            }
            Limit::Depth => format!(
                "a query may be at most {MAX_DEPTH} fields deep ({MAX_INTROSPECTION_DEPTH} in introspection)"
            ),
            Limit::Complexity => format!("a query may cost at most {MAX_COMPLEXITY}"),
            Limit::Fields => format!(
                "a request may select at most {MAX_FIELDS} fields, fragments counted each time they are used"
            ),
            Limit::Aliases => format!("a request may use at most {MAX_ALIASES} aliases"),
            Limit::RootFields => {
                format!("an operation may select at most {MAX_ROOT_FIELDS} root fields")
            }
            Limit::Directives => format!("a request may use at most {MAX_DIRECTIVES} directives"),
            Limit::PasswordOperations => format!(
                "a request may carry at most {MAX_PASSWORD_OPERATIONS} operation that checks a password"
            ),
        }
    }

    /// The error a client sees: `VALIDATION`, the field and the limit's name.
    pub fn error(self) -> ServerError {
        let field = if self == Limit::Body { "body" } else { "query" };
        coded_error(self.message(), field, Some(self))
    }
}

/// A `VALIDATION` error on `field`, naming `limit` when there is one.
pub fn coded_error(message: String, field: &str, limit: Option<Limit>) -> ServerError {
    let mut error = ServerError::new(message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", "VALIDATION");
    extensions.set("field", field);
    if let Some(limit) = limit {
        extensions.set("limit", limit.name());
    }
    error.extensions = Some(extensions);
    error
}

/// Check a query text before it is parsed: its length, its number of tokens
/// and how deep its brackets nest. A light scan of GraphQL's lexical grammar
/// (strings, block strings, comments, punctuators, names and numbers); what
/// it does not understand is left for the parser to refuse.
pub fn check_text(query: &str) -> Result<(), Limit> {
    if query.len() > MAX_QUERY_CHARS && query.chars().count() > MAX_QUERY_CHARS {
        return Err(Limit::QueryLength);
    }
    let bytes = query.as_bytes();
    let mut tokens = 0usize;
    // Open brackets: `(` arguments, `[`/`{` inside them (literals), `{` outside (selections).
    let mut open: Vec<Bracket> = Vec::new();
    let mut literal = 0usize;
    let mut selection = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
                continue;
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                i += 3;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'.' if bytes[i..].starts_with(b"...") => i += 3,
            b'(' => {
                open.push(Bracket::Arguments);
                i += 1;
            }
            b'[' | b'{' => {
                let in_arguments = open.contains(&Bracket::Arguments);
                if in_arguments || b == b'[' {
                    literal += 1;
                    open.push(Bracket::Literal);
                    if literal > MAX_LITERAL_NESTING {
                        return Err(Limit::LiteralNesting);
                    }
                } else {
                    selection += 1;
                    open.push(Bracket::Selection);
                    if selection > MAX_SELECTION_NESTING {
                        return Err(Limit::SelectionNesting);
                    }
                }
                i += 1;
            }
            b')' | b']' | b'}' => {
                match open.pop() {
                    Some(Bracket::Literal) => literal -= 1,
                    Some(Bracket::Selection) => selection -= 1,
                    Some(Bracket::Arguments) | None => {}
                }
                i += 1;
            }
            b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'0'..=b'9' | b'-' => {
                i += 1;
                while i < bytes.len()
                    && matches!(bytes[i], b'A'..=b'Z' | b'a'..=b'z' | b'_' | b'0'..=b'9' | b'.' | b'+' | b'-')
                {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        tokens += 1;
        if tokens > MAX_TOKENS {
            return Err(Limit::Tokens);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bracket {
    Arguments,
    Literal,
    Selection,
}

/// What a selection set costs once every fragment spread is expanded.
#[derive(Debug, Clone, Copy, Default)]
struct Cost {
    fields: usize,
    aliases: usize,
    directives: usize,
    passwords: usize,
    /// Fields deep, outside introspection.
    depth: usize,
    /// Fields deep, counted from an introspection field.
    introspection_depth: usize,
    /// Selection sets, inline fragments and spreads deep.
    nesting: usize,
}

impl Cost {
    /// Deeper than any limit allows: the walk stopped there.
    const TOO_DEEP: Cost = Cost {
        fields: 0,
        aliases: 0,
        directives: 0,
        passwords: 0,
        depth: 0,
        introspection_depth: 0,
        nesting: usize::MAX,
    };

    /// `inner` used inside this selection, `levels` deeper.
    fn include(&mut self, inner: Cost, depth_levels: usize) {
        self.add_counts(inner);
        self.depth = self.depth.max(inner.depth.saturating_add(depth_levels));
        self.introspection_depth = self
            .introspection_depth
            .max(inner.introspection_depth.saturating_add(depth_levels));
    }

    /// `inner` selected by an introspection field of this selection: its
    /// depth counts against the introspection allowance.
    fn include_introspection(&mut self, inner: Cost) {
        self.add_counts(inner);
        self.introspection_depth = self
            .introspection_depth
            .max(inner.depth.max(inner.introspection_depth).saturating_add(1));
    }

    fn add_counts(&mut self, inner: Cost) {
        self.fields = self.fields.saturating_add(inner.fields);
        self.aliases = self.aliases.saturating_add(inner.aliases);
        self.directives = self.directives.saturating_add(inner.directives);
        self.passwords = self.passwords.saturating_add(inner.passwords);
        self.nesting = self.nesting.max(inner.nesting.saturating_add(1));
    }

    fn exceeded(&self) -> Option<Limit> {
        [
            (self.fields > MAX_FIELDS, Limit::Fields),
            (self.aliases > MAX_ALIASES, Limit::Aliases),
            (self.directives > MAX_DIRECTIVES, Limit::Directives),
            (
                self.passwords > MAX_PASSWORD_OPERATIONS,
                Limit::PasswordOperations,
            ),
            (self.depth > MAX_DEPTH, Limit::Depth),
            (
                self.introspection_depth > MAX_INTROSPECTION_DEPTH,
                Limit::Depth,
            ),
            (
                self.nesting > MAX_SELECTION_NESTING,
                Limit::SelectionNesting,
            ),
        ]
        .into_iter()
        .find_map(|(over, limit)| over.then_some(limit))
    }
}

/// Costs selection sets, each fragment once (memoized), so a fragment
/// spread N times costs N times its fields without being walked N times.
struct Coster<'a> {
    doc: &'a ExecutableDocument,
    /// `None` while the fragment is being walked (meeting it then is a cycle).
    fragments: HashMap<&'a str, Option<Cost>>,
}

impl<'a> Coster<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet, level: usize) -> Cost {
        if level > MAX_SELECTION_NESTING {
            return Cost::TOO_DEEP;
        }
        let mut cost = Cost::default();
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    cost.fields = cost.fields.saturating_add(1);
                    cost.aliases += usize::from(field.alias.is_some());
                    cost.directives = cost.directives.saturating_add(field.directives.len());
                    let name = field.name.node.as_str();
                    cost.passwords += usize::from(PASSWORD_OPERATIONS.contains(&name));
                    let inner = self.selection_set(&field.selection_set.node, level + 1);
                    if INTROSPECTION_FIELDS.contains(&name) {
                        cost.include_introspection(inner);
                    } else {
                        cost.include(inner, 1);
                    }
                    cost.depth = cost.depth.max(1);
                }
                Selection::InlineFragment(fragment) => {
                    let fragment = &fragment.node;
                    cost.directives = cost.directives.saturating_add(fragment.directives.len());
                    let inner = self.selection_set(&fragment.selection_set.node, level + 1);
                    cost.include(inner, 0);
                }
                Selection::FragmentSpread(spread) => {
                    let spread = &spread.node;
                    cost.directives = cost.directives.saturating_add(spread.directives.len());
                    let inner = self.fragment(spread.fragment_name.node.as_str(), level + 1);
                    cost.include(inner, 0);
                }
            }
            if cost.exceeded().is_some() {
                break;
            }
        }
        cost
    }

    fn fragment(&mut self, name: &'a str, level: usize) -> Cost {
        match self.fragments.get(name) {
            Some(Some(cost)) => return *cost,
            // A cycle: it would nest without end (validation refuses it too,
            // but only after async-graphql's depth check walked it).
            Some(None) => return Cost::TOO_DEEP,
            None => {}
        }
        let Some((key, definition)) = self.doc.fragments.get_key_value(name) else {
            return Cost::default();
        };
        self.fragments.insert(key.as_str(), None);
        let definition = &definition.node;
        let mut cost = self.selection_set(&definition.selection_set.node, level);
        cost.directives = cost.directives.saturating_add(definition.directives.len());
        self.fragments.insert(key.as_str(), Some(cost));
        cost
    }
}

/// Check the shape of a parsed document, fragments expanded.
pub fn check_document(doc: &ExecutableDocument) -> Result<(), Limit> {
    let mut coster = Coster {
        doc,
        fragments: HashMap::new(),
    };
    let mut total = Cost::default();
    for (_, operation) in doc.operations.iter() {
        let operation = &operation.node;
        let root = &operation.selection_set.node;
        if root.items.len() > MAX_ROOT_FIELDS {
            return Err(Limit::RootFields);
        }
        let cost = coster.selection_set(root, 1);
        total.include(cost, 0);
        total.directives = total.directives.saturating_add(operation.directives.len());
        if let Some(limit) = total.exceeded() {
            return Err(limit);
        }
    }
    // The operation itself is one level: what it selects counts from there.
    total.nesting = total.nesting.saturating_sub(1);
    total.exceeded().map_or(Ok(()), Err)
}

/// Refuse control characters (U+0000–U+001F, U+007F) in string arguments,
/// given inline or through variables, on both backends alike (PostgreSQL
/// refuses NUL in text; the others have no place in an email address, a key
/// or a name). Free text (`message`, `description`, `reason`) may hold TAB,
/// LF and CR. The error names the argument or input field, as the schema
/// spells it.
pub fn check_strings(doc: &ExecutableDocument, variables: &Variables) -> Result<(), ServerError> {
    let sets = doc
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set.node)
        .chain(
            doc.fragments
                .values()
                .map(|fragment| &fragment.node.selection_set.node),
        );
    for set in sets {
        check_set_strings(set, variables)?;
    }
    Ok(())
}

fn check_set_strings(set: &SelectionSet, variables: &Variables) -> Result<(), ServerError> {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => {
                for (name, value) in &field.node.arguments {
                    check_value(name.node.as_str(), &value.node, variables)?;
                }
                check_set_strings(&field.node.selection_set.node, variables)?;
            }
            Selection::InlineFragment(fragment) => {
                check_set_strings(&fragment.node.selection_set.node, variables)?;
            }
            Selection::FragmentSpread(_) => {}
        }
    }
    Ok(())
}

/// Check `value`, given for the argument or input field `name`.
fn check_value(name: &str, value: &Value, variables: &Variables) -> Result<(), ServerError> {
    match value {
        Value::String(text) => check_string(name, text),
        Value::List(items) => items
            .iter()
            .try_for_each(|item| check_value(name, item, variables)),
        Value::Object(fields) => fields
            .iter()
            .try_for_each(|(key, item)| check_value(key.as_str(), item, variables)),
        Value::Variable(variable) => match variables.get(variable) {
            Some(given) => check_const(name, given),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

fn check_const(name: &str, value: &ConstValue) -> Result<(), ServerError> {
    match value {
        ConstValue::String(text) => check_string(name, text),
        ConstValue::List(items) => items.iter().try_for_each(|item| check_const(name, item)),
        ConstValue::Object(fields) => fields
            .iter()
            .try_for_each(|(key, item)| check_const(key.as_str(), item)),
        _ => Ok(()),
    }
}

fn check_string(name: &str, text: &str) -> Result<(), ServerError> {
    let free_text = FREE_TEXT.contains(&name);
    let refused =
        |c: char| (c.is_ascii_control()) && !(free_text && matches!(c, '\t' | '\n' | '\r'));
    if text.chars().any(refused) {
        return Err(coded_error(
            format!("{name} may not contain control characters"),
            name,
            None,
        ));
    }
    Ok(())
}

/// Give every error of `response` an `extensions.code`: async-graphql's
/// own (syntax, unknown fields, variables, complexity) have none, and
/// become `VALIDATION` on `query` (complexity naming its limit).
pub fn give_codes(response: &mut async_graphql::Response) {
    for error in &mut response.errors {
        let complexity = error.message.contains("too complex");
        let extensions = error.extensions.get_or_insert_with(Default::default);
        if extensions.get("code").is_none() {
            extensions.set("code", "VALIDATION");
            extensions.set("field", "query");
            if complexity {
                extensions.set("limit", Limit::Complexity.name());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).expect("parses")
    }

    #[test]
    fn deep_literals_are_refused_before_parsing() {
        let deep = format!(
            "query{{validateLicense(key:{}\"x\"{}){{valid}}}}",
            "[".repeat(3000),
            "]".repeat(3000)
        );
        assert_eq!(check_text(&deep), Err(Limit::LiteralNesting));
        let object = format!("{{a(x:{}1{})}}", "{a:".repeat(40), "}".repeat(40));
        assert_eq!(check_text(&object), Err(Limit::LiteralNesting));
        let selections = format!("{}{}", "{a".repeat(40), "}".repeat(40));
        assert_eq!(check_text(&selections), Err(Limit::SelectionNesting));
        let fine = format!("{{a(x:{}1{})}}", "[".repeat(32), "]".repeat(32));
        assert_eq!(check_text(&fine), Ok(()));
    }

    #[test]
    fn brackets_in_strings_and_comments_do_not_count() {
        let text = format!(
            "{{a(x:\"{}\" y:\"\"\"{}\"\"\") # {}\n}}",
            "[".repeat(100),
            "{".repeat(100),
            "(".repeat(100)
        );
        assert_eq!(check_text(&text), Ok(()));
    }

    #[test]
    fn tokens_and_length_are_bounded() {
        let many = "{".to_owned() + &"a ".repeat(MAX_TOKENS) + "}";
        assert_eq!(check_text(&many), Err(Limit::Tokens));
        let long = format!("{{a(x:\"{}\")}}", "é".repeat(MAX_QUERY_CHARS));
        assert_eq!(check_text(&long), Err(Limit::QueryLength));
        // Bytes are not characters.
        let wide = format!("{{a(x:\"{}\")}}", "é".repeat(MAX_QUERY_CHARS / 2));
        assert_eq!(check_text(&wide), Ok(()));
    }

    /// `fragment Fi on Query { ...Fi+1 ...Fi+1 }`: 2^levels fields once expanded.
    fn fan_out(levels: usize) -> String {
        let mut text = "query Q{...F0}".to_owned();
        for i in 0..levels {
            text += &format!("fragment F{i} on Query{{...F{n} ...F{n}}}", n = i + 1);
        }
        text + &format!("fragment F{levels} on Query{{me{{id}}}}")
    }

    #[test]
    fn fragments_count_as_often_as_they_are_spread() {
        assert_eq!(check_document(&parse(&fan_out(15))), Err(Limit::Fields));
        // Deeper still, the spreads' own nesting stops the walk first.
        assert!(check_document(&parse(&fan_out(30))).is_err());
        assert_eq!(check_document(&parse(&fan_out(4))), Ok(()));
    }

    #[test]
    fn depth_counts_through_fragments() {
        let mut text = "{...F0}".to_owned();
        for i in 0..20 {
            text += &format!("fragment F{i} on Query{{a{{...F{}}}}}", i + 1);
        }
        text += "fragment F20 on Query{b}";
        assert!(matches!(
            check_document(&parse(&text)),
            Err(Limit::Depth | Limit::SelectionNesting)
        ));
    }

    #[test]
    fn introspection_may_go_deeper_than_data() {
        let of_type = |n: usize| format!("{}kind{}", "ofType{".repeat(n), "}".repeat(n));
        // graphql-js's query: __schema types fields args type, ofType nine times.
        let standard = format!(
            "{{__schema{{types{{...T}}}}}} fragment T on __Type{{fields{{args{{type{{{}}}}}}}}}",
            of_type(9)
        );
        assert_eq!(check_document(&parse(&standard)), Ok(()));
        let deeper = format!("{{__type(name:\"Query\"){{{}}}}}", of_type(15));
        assert_eq!(check_document(&parse(&deeper)), Err(Limit::Depth));
        let data = format!(
            "{{orders{{edges{{node{{{}id{}}}}}}}}}",
            "order{".repeat(9),
            "}".repeat(9)
        );
        assert_eq!(check_document(&parse(&data)), Err(Limit::Depth));
    }

    #[test]
    fn a_cycle_of_fragments_is_refused() {
        let text = "{...A} fragment A on Query{...B} fragment B on Query{...A}";
        assert_eq!(check_document(&parse(text)), Err(Limit::SelectionNesting));
        // Doubling at each turn: walked once, not 2^32 times.
        let text = "{...A} fragment A on Query{...B ...B} fragment B on Query{...A ...A}";
        assert_eq!(check_document(&parse(text)), Err(Limit::SelectionNesting));
        // A fragment spread twice side by side is no cycle.
        let text = "{...A ...A} fragment A on Query{...B me{id}} fragment B on Query{me{id}}";
        assert_eq!(check_document(&parse(text)), Ok(()));
    }

    #[test]
    fn one_password_operation_per_request() {
        let two = r#"mutation{a:signIn(email:"a",password:"b"){token} b:signIn(email:"a",password:"b"){token}}"#;
        assert_eq!(check_document(&parse(two)), Err(Limit::PasswordOperations));
    }

    #[test]
    fn aliases_and_directives_are_counted() {
        let aliases = format!(
            "{{me{{{}}}}}",
            (0..31)
                .map(|i| format!("a{i}:me{{id}} "))
                .collect::<String>()
        );
        assert_eq!(check_document(&parse(&aliases)), Err(Limit::Aliases));
        let directives = format!("{{me{{{}}}}}", "id @include(if:true) ".repeat(51));
        assert_eq!(check_document(&parse(&directives)), Err(Limit::Directives));
    }

    #[test]
    fn control_characters_are_refused_except_layout_in_free_text() {
        let variables = Variables::from_json(serde_json::json!({"k": "a\u{0}b"}));
        let doc = parse("query($k:String!){validateLicense(key:$k){valid}}");
        let error = check_strings(&doc, &variables).expect_err("NUL refused");
        let extensions = error.extensions.expect("extensions");
        assert_eq!(
            extensions.get("field"),
            Some(&async_graphql::Value::from("key"))
        );
        let doc = parse(
            r#"mutation{requestLicense(input:{buyerEmail:"a@b.c", message:"hi\n\tthere"}){request{id}}}"#,
        );
        assert!(check_strings(&doc, &Variables::default()).is_ok());
        let doc = parse(
            r#"mutation{requestLicense(input:{buyerEmail:"a@b.c\n", message:"x"}){request{id}}}"#,
        );
        assert!(check_strings(&doc, &Variables::default()).is_err());
    }
}
