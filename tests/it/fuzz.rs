//! A generated fuzz run: random documents and variables built from the
//! served schema (every operation, real and hostile values, wrong types now
//! and then), sent anonymously, as a user and as an administrator. No answer
//! may be a 5xx, an `INTERNAL` or an error without a code, and the server
//! must keep answering. The seed is printed; `FUZZ_SEED` replays a run and
//! `FUZZ_CASES` sets its length.
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde_json::{Map, Value, json};

use crate::{
    harness::{TestApp, unique},
    introspect::{Schema, TypeRef, literal},
};

const DEFAULT_SEED: u64 = 20_261_202;
const DEFAULT_CASES: usize = 2_000;

struct Gen<'a> {
    rng: StdRng,
    schema: &'a Schema,
    strings: Vec<String>,
    definitions: Vec<String>,
    variables: Map<String, Value>,
}

impl Gen<'_> {
    fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn document(&mut self) -> (String, Value) {
        self.definitions.clear();
        self.variables.clear();
        let roll = self.rng.random_range(0..100);
        let (keyword, root) = match roll {
            0..3 => return ("subscription { events { id kind } }".into(), json!({})),
            3..50 => ("query", self.schema.query.clone()),
            _ => ("mutation", self.schema.mutation.clone()),
        };
        let count = self.rng.random_range(1..=3);
        let fields = self.schema.ty(&root).fields.clone();
        let mut body = Vec::new();
        for i in 0..count {
            let field = self.pick(&fields).clone();
            let alias = if self.rng.random_bool(0.2) || i > 0 {
                format!("f{i}: ")
            } else {
                String::new()
            };
            let args = self.arguments(&field.args);
            let selection = self.selection(&field.ty, 0);
            body.push(format!("{alias}{}{args} {selection}", field.name));
        }
        let definitions = if self.definitions.is_empty() {
            String::new()
        } else {
            format!("({})", self.definitions.join(", "))
        };
        (
            format!("{keyword}{definitions} {{ {} }}", body.join(" ")),
            Value::Object(self.variables.clone()),
        )
    }

    fn arguments(&mut self, args: &[(String, TypeRef)]) -> String {
        let mut given = Vec::new();
        for (name, ty) in args {
            if !ty.required() && self.rng.random_bool(0.5) {
                continue;
            }
            let value = self.value(ty, 0);
            if self.rng.random_bool(0.3) {
                let variable = format!("v{}", self.variables.len());
                self.definitions
                    .push(format!("${variable}: {}", ty.render()));
                self.variables.insert(variable.clone(), value);
                given.push(format!("{name}: ${variable}"));
            } else {
                given.push(format!("{name}: {}", literal(self.schema, ty, &value)));
            }
        }
        if given.is_empty() {
            String::new()
        } else {
            format!("({})", given.join(", "))
        }
    }

    fn value(&mut self, ty: &TypeRef, depth: usize) -> Value {
        if self.rng.random_bool(0.04) {
            return self.wrong_value();
        }
        match ty {
            TypeRef::NonNull(inner) => self.value(inner, depth),
            TypeRef::List(inner) => {
                let n = self.rng.random_range(0..3);
                Value::Array((0..n).map(|_| self.value(inner, depth)).collect())
            }
            TypeRef::Named(name) => match name.as_str() {
                "Int" => json!(*self.pick(&[0, 1, -1, 3, 100, 101, i32::MAX, i32::MIN])),
                "Float" => json!(*self.pick(&[0.0, -1.5, 1e300])),
                "Boolean" => json!(self.rng.random_bool(0.5)),
                "ID" => {
                    json!(*self.pick(&["1", "2", "0", "-1", "99999999999999999999", "abc", ""]))
                }
                "DateTime" => json!(*self.pick(&["2026-01-01T00:00:00Z", "yesterday"])),
                _ => {
                    let named = self.schema.ty(name).clone();
                    match named.kind.as_str() {
                        "ENUM" => json!(self.pick(&named.enum_values).clone()),
                        "INPUT_OBJECT" if depth < 3 => {
                            let mut object = Map::new();
                            for (field, field_ty) in &named.input_fields {
                                if field_ty.required() || self.rng.random_bool(0.5) {
                                    object.insert(field.clone(), self.value(field_ty, depth + 1));
                                }
                            }
                            Value::Object(object)
                        }
                        "INPUT_OBJECT" => json!({}),
                        _ => json!(self.pick(&self.strings.clone()).clone()),
                    }
                }
            },
        }
    }

    fn wrong_value(&mut self) -> Value {
        match self.rng.random_range(0..5) {
            0 => Value::Null,
            1 => json!(-7),
            2 => json!("wrong"),
            3 => json!([1, "two"]),
            _ => json!({"unexpected": true}),
        }
    }

    fn selection(&mut self, ty: &TypeRef, depth: usize) -> String {
        let named = self.schema.ty(ty.named()).clone();
        match named.kind.as_str() {
            "OBJECT" if depth < 3 => {
                let count = self.rng.random_range(1..=3);
                let mut parts = vec!["__typename".to_owned()];
                for _ in 0..count {
                    let field = self.pick(&named.fields).clone();
                    let args = self.arguments(&field.args);
                    let inner = self.selection(&field.ty, depth + 1);
                    parts.push(format!("{}{args} {inner}", field.name));
                }
                // Two picks of one field with other arguments do not merge:
                // alias each.
                let parts: Vec<String> = parts
                    .into_iter()
                    .enumerate()
                    .map(|(i, part)| {
                        if i == 0 {
                            part
                        } else {
                            format!("s{i}: {part}")
                        }
                    })
                    .collect();
                format!("{{ {} }}", parts.join(" "))
            }
            "OBJECT" | "INTERFACE" | "UNION" => "{ __typename }".into(),
            _ => String::new(),
        }
    }
}

#[tokio::test]
async fn generated_requests_never_fail_inside() {
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    println!("fuzz: seed {seed}, {cases} cases (FUZZ_SEED and FUZZ_CASES replay a run)");
    let app = TestApp::spawn().await;
    let schema = Schema::load(&app).await;
    let email = format!("{}@example.com", unique("fuzz"));
    let (user, _) = app.verified_user(&email).await;
    let admin = app.admin().await;
    let (_, _, keys) = app.paid_order(&user, 2).await;
    let mut strings: Vec<String> = [
        "",
        "x",
        "  padded  ",
        "a@b.c",
        "ABCD-EFGH-JKMN-PQRS",
        "é漢字🙂",
        "Robert'); DROP TABLE accounts;--",
        "<script>alert(1)</script>",
        "73282932000074",
        "%00",
        "a\u{0}b",
        "tab\there",
        "line\nbreak",
        "\u{7f}",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    strings.push("y".repeat(300));
    strings.push(email.clone());
    strings.extend(keys);
    let mut generator = Gen {
        rng: StdRng::seed_from_u64(seed),
        schema: &schema,
        strings,
        definitions: Vec::new(),
        variables: Map::new(),
    };
    let tokens = [None, Some(user.as_str()), Some(admin.as_str())];
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for case in 0..cases {
        let (query, variables) = generator.document();
        let token = *generator.pick(&tokens);
        let mut request = app
            .http
            .post(format!("{}/graphql", app.base))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let context = || format!("case {case} (seed {seed}): {query} {variables}");
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", context()));
        assert!(
            response.status().as_u16() < 500,
            "{}: {}",
            context(),
            response.status()
        );
        let body: Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", context()));
        for error in body["errors"].as_array().into_iter().flatten() {
            let code = error["extensions"]["code"].as_str();
            assert!(code.is_some(), "{}: {error}", context());
            assert_ne!(code, Some("INTERNAL"), "{}: {error}", context());
            *codes
                .entry(code.unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    println!("fuzz: error codes seen {codes:?}");
    let health = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), 200);
}
