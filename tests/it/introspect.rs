//! The served schema, read by introspection, for tests that must cover every
//! operation whatever the schema grows into: the NUL-byte sweep and the
//! generated fuzz run.
use std::collections::HashMap;

use serde_json::{Value, json};

use crate::harness::TestApp;

const INTROSPECTION: &str = r#"{ __schema {
  queryType { name } mutationType { name }
  types { kind name
    fields { name args { name type { ...T } } type { ...T } }
    inputFields { name type { ...T } }
    enumValues { name } } } }
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }"#;

/// A type reference as introspection gives it.
#[derive(Debug, Clone)]
pub enum TypeRef {
    Named(String),
    List(Box<TypeRef>),
    NonNull(Box<TypeRef>),
}

impl TypeRef {
    fn parse(value: &Value) -> TypeRef {
        match value["kind"].as_str() {
            Some("NON_NULL") => TypeRef::NonNull(Box::new(TypeRef::parse(&value["ofType"]))),
            Some("LIST") => TypeRef::List(Box::new(TypeRef::parse(&value["ofType"]))),
            _ => TypeRef::Named(value["name"].as_str().unwrap_or_default().to_owned()),
        }
    }

    pub fn named(&self) -> &str {
        match self {
            TypeRef::Named(name) => name,
            TypeRef::List(inner) | TypeRef::NonNull(inner) => inner.named(),
        }
    }

    pub fn required(&self) -> bool {
        matches!(self, TypeRef::NonNull(_))
    }

    /// As written in a variable definition: `[String!]!`.
    pub fn render(&self) -> String {
        match self {
            TypeRef::Named(name) => name.clone(),
            TypeRef::List(inner) => format!("[{}]", inner.render()),
            TypeRef::NonNull(inner) => format!("{}!", inner.render()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub args: Vec<(String, TypeRef)>,
    pub ty: TypeRef,
}

#[derive(Debug, Clone)]
pub struct Type {
    pub kind: String,
    pub fields: Vec<Field>,
    pub input_fields: Vec<(String, TypeRef)>,
    pub enum_values: Vec<String>,
}

pub struct Schema {
    pub query: String,
    pub mutation: String,
    pub types: HashMap<String, Type>,
}

/// One place a string can be given: `path` (object fields from the root),
/// then argument `arg`, then input fields `inside` down to `leaf`.
#[derive(Debug, Clone)]
pub struct Slot {
    pub root: String,
    pub path: Vec<String>,
    pub arg: String,
    pub inside: Vec<String>,
    pub leaf: String,
}

impl Schema {
    pub async fn load(app: &TestApp) -> Schema {
        let data = app.ok(None, INTROSPECTION, json!({})).await;
        let schema = &data["__schema"];
        let mut types = HashMap::new();
        for ty in schema["types"].as_array().expect("types") {
            let list = |key: &str| ty[key].as_array().cloned().unwrap_or_default();
            let fields = list("fields")
                .iter()
                .map(|f| Field {
                    name: f["name"].as_str().unwrap_or_default().to_owned(),
                    args: f["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            (
                                a["name"].as_str().unwrap_or_default().to_owned(),
                                TypeRef::parse(&a["type"]),
                            )
                        })
                        .collect(),
                    ty: TypeRef::parse(&f["type"]),
                })
                .collect();
            let input_fields = list("inputFields")
                .iter()
                .map(|f| {
                    (
                        f["name"].as_str().unwrap_or_default().to_owned(),
                        TypeRef::parse(&f["type"]),
                    )
                })
                .collect();
            let enum_values = list("enumValues")
                .iter()
                .filter_map(|v| v["name"].as_str().map(str::to_owned))
                .collect();
            types.insert(
                ty["name"].as_str().unwrap_or_default().to_owned(),
                Type {
                    kind: ty["kind"].as_str().unwrap_or_default().to_owned(),
                    fields,
                    input_fields,
                    enum_values,
                },
            );
        }
        Schema {
            query: schema["queryType"]["name"]
                .as_str()
                .expect("Query")
                .to_owned(),
            mutation: schema["mutationType"]["name"]
                .as_str()
                .expect("Mutation")
                .to_owned(),
            types,
        }
    }

    pub fn ty(&self, name: &str) -> &Type {
        self.types
            .get(name)
            .unwrap_or_else(|| panic!("type {name}"))
    }

    /// Scalars given as strings in GraphQL (every scalar but numbers and booleans).
    pub fn is_textual(&self, name: &str) -> bool {
        !matches!(name, "Int" | "Float" | "Boolean") && self.ty(name).kind == "SCALAR"
    }

    /// Every place of the schema a string can be given, for the root
    /// fields and the fields of objects they return without arguments
    /// (such as `admin { … }`).
    pub fn string_slots(&self) -> Vec<Slot> {
        let mut slots = Vec::new();
        for root in [&self.query, &self.mutation] {
            for field in &self.ty(root).fields {
                self.field_slots(root, vec![field.name.clone()], field, &mut slots);
                let returned = self.ty(field.ty.named());
                if field.args.is_empty() && returned.kind == "OBJECT" {
                    for inner in &returned.fields {
                        let path = vec![field.name.clone(), inner.name.clone()];
                        self.field_slots(root, path, inner, &mut slots);
                    }
                }
            }
        }
        slots
    }

    fn field_slots(&self, root: &str, path: Vec<String>, field: &Field, slots: &mut Vec<Slot>) {
        for (arg, ty) in &field.args {
            let mut leaves = Vec::new();
            self.leaves(ty, vec![], 0, &mut leaves);
            for inside in leaves {
                slots.push(Slot {
                    root: root.to_owned(),
                    path: path.clone(),
                    arg: arg.clone(),
                    leaf: inside.last().unwrap_or(arg).clone(),
                    inside,
                });
            }
        }
    }

    fn leaves(&self, ty: &TypeRef, at: Vec<String>, depth: usize, out: &mut Vec<Vec<String>>) {
        let named = ty.named();
        if self.is_textual(named) {
            out.push(at);
        } else if self.ty(named).kind == "INPUT_OBJECT" && depth < 3 {
            for (name, inner) in &self.ty(named).input_fields {
                let mut path = at.clone();
                path.push(name.clone());
                self.leaves(inner, path, depth + 1, out);
            }
        }
    }

    /// A valid value of `ty` (required input fields only).
    pub fn sample(&self, ty: &TypeRef, depth: usize) -> Value {
        match ty {
            TypeRef::NonNull(inner) => self.sample(inner, depth),
            TypeRef::List(inner) => json!([self.sample(inner, depth)]),
            TypeRef::Named(name) => match name.as_str() {
                "Int" => json!(1),
                "Float" => json!(1.5),
                "Boolean" => json!(true),
                "ID" => json!("1"),
                "DateTime" => json!("2026-01-01T00:00:00Z"),
                _ => {
                    let named = self.ty(name);
                    match named.kind.as_str() {
                        "ENUM" => json!(named.enum_values[0]),
                        "INPUT_OBJECT" if depth < 4 => Value::Object(
                            named
                                .input_fields
                                .iter()
                                .filter(|(_, t)| t.required())
                                .map(|(n, t)| (n.clone(), self.sample(t, depth + 1)))
                                .collect(),
                        ),
                        "INPUT_OBJECT" => json!({}),
                        _ => json!("x"),
                    }
                }
            },
        }
    }

    /// The selection a field of `ty` needs: `{ __typename }` for objects.
    pub fn selection(&self, ty: &TypeRef) -> &'static str {
        match self.ty(ty.named()).kind.as_str() {
            "OBJECT" | "INTERFACE" | "UNION" => "{ __typename }",
            _ => "",
        }
    }

    pub fn field(&self, parent: &str, name: &str) -> &Field {
        self.ty(parent)
            .fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("{parent}.{name}"))
    }
}

/// A GraphQL literal of a JSON value (enum values given as `{"$enum": name}`
/// are not needed here: enums come from [`Schema::sample`] as strings and
/// are written bare when `ty` says so).
pub fn literal(schema: &Schema, ty: &TypeRef, value: &Value) -> String {
    match (ty, value) {
        (TypeRef::NonNull(inner), _) => literal(schema, inner, value),
        (TypeRef::List(inner), Value::Array(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|item| literal(schema, inner, item))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (TypeRef::List(inner), _) => literal(schema, inner, value),
        (TypeRef::Named(name), Value::Object(fields)) => {
            let named = schema.ty(name);
            let parts: Vec<String> = fields
                .iter()
                .map(|(key, item)| {
                    let field_ty = named
                        .input_fields
                        .iter()
                        .find(|(n, _)| n == key)
                        .map(|(_, t)| t.clone())
                        .unwrap_or(TypeRef::Named("String".into()));
                    format!("{key}: {}", literal(schema, &field_ty, item))
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        (TypeRef::Named(name), Value::String(text)) if schema.ty(name).kind == "ENUM" => {
            text.clone()
        }
        _ => value.to_string(),
    }
}

impl Slot {
    /// A request that gives `text` at this slot and valid values elsewhere,
    /// inline or through a variable.
    pub fn request(&self, schema: &Schema, text: &str, inline: bool) -> (String, Value) {
        let mut parent = self.root.clone();
        let mut fields = Vec::new();
        for name in &self.path {
            let field = schema.field(&parent, name).clone();
            parent = field.ty.named().to_owned();
            fields.push(field);
        }
        let target = fields.last().expect("a field");
        let mut definitions = String::new();
        let mut variables = serde_json::Map::new();
        let mut args = Vec::new();
        for (name, ty) in &target.args {
            if name != &self.arg && !ty.required() {
                continue;
            }
            let mut value = schema.sample(ty, 0);
            if name == &self.arg {
                place(&mut value, &self.inside, text);
            }
            if name == &self.arg && !inline {
                definitions = format!("($v: {})", ty.render());
                variables.insert("v".into(), value);
                args.push(format!("{name}: $v"));
            } else {
                args.push(format!("{name}: {}", literal(schema, ty, &value)));
            }
        }
        let mut body = format!(
            "{}({}) {}",
            target.name,
            args.join(", "),
            schema.selection(&target.ty)
        );
        for outer in fields.iter().rev().skip(1) {
            body = format!("{} {{ {body} }}", outer.name);
        }
        let operation = if self.root == schema.mutation {
            "mutation"
        } else {
            "query"
        };
        (
            format!("{operation}{definitions} {{ {body} }}"),
            Value::Object(variables),
        )
    }
}

/// Put `text` at `path` inside `value` (into the first item of lists).
fn place(value: &mut Value, path: &[String], text: &str) {
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                items.push(Value::Null);
            }
            place(&mut items[0], path, text);
        }
        _ => match path.split_first() {
            None => *value = json!(text),
            Some((first, rest)) => {
                if !value.is_object() {
                    *value = json!({});
                }
                let entry = value
                    .as_object_mut()
                    .expect("object")
                    .entry(first.clone())
                    .or_insert(Value::Null);
                if rest.is_empty() && !entry.is_array() {
                    *entry = json!(text);
                } else {
                    place(entry, rest, text);
                }
            }
        },
    }
}
