//! The root fields an operation of a parsed document selects, through
//! fragment spreads and inline fragments: what the scope check and the
//! `Idempotency-Key` gate look at before anything executes.
use std::collections::HashSet;

use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};

/// The operation a request runs: the one named `operation_name`, or the
/// document's only one. `None` when that is ambiguous or missing (the
/// schema then refuses the request itself).
pub fn selected<'a>(
    doc: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<(OperationType, &'a SelectionSet)> {
    let operation = match (&doc.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        _ => return None,
    };
    Some((operation.node.ty, &operation.node.selection_set.node))
}

/// The names of the root fields `selection_set` selects (with repeats),
/// `__typename` and the other introspection fields included, however deep
/// they sit in fragments: the checks that read them must see every one.
/// Each named fragment is read once (the root fields it adds do not depend
/// on where it is spread), so a cyclic document or one spreading a
/// fragment many times costs no more than its length. A spread of an
/// unknown fragment adds nothing (validation refuses it).
pub fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    selection_set: &'a SelectionSet,
) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut spread = HashSet::new();
    let mut sets = vec![selection_set];
    while let Some(set) = sets.pop() {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => names.push(field.node.name.node.as_str()),
                Selection::InlineFragment(fragment) => sets.push(&fragment.node.selection_set.node),
                Selection::FragmentSpread(fragment) => {
                    let name = &fragment.node.fragment_name.node;
                    if spread.insert(name.as_str())
                        && let Some(fragment) = doc.fragments.get(name)
                    {
                        sets.push(&fragment.node.selection_set.node);
                    }
                }
            }
        }
    }
    names
}

/// The name of a root type as the schema spells it.
pub fn root_name(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "Query",
        OperationType::Mutation => "Mutation",
        OperationType::Subscription => "Subscription",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_followed_and_the_named_operation_chosen() {
        let doc = async_graphql::parser::parse_query(
            "query A { me { id } ...F ... on Query { b: orders { __typename } } }
             mutation B { signIn(email: \"\", password: \"\") { token } }
             fragment F on Query { products { code } ...G }
             fragment G on Query { ...F }",
        )
        .unwrap();
        let (ty, set) = selected(&doc, Some("A")).unwrap();
        assert_eq!(ty, OperationType::Query);
        let names = root_fields(&doc, set);
        assert!(names.contains(&"me") && names.contains(&"products") && names.contains(&"orders"));
        let (ty, set) = selected(&doc, Some("B")).unwrap();
        assert_eq!(ty, OperationType::Mutation);
        assert_eq!(root_fields(&doc, set), ["signIn"]);
        assert!(selected(&doc, None).is_none());
    }

    /// However deep a root field sits in fragments, it is seen: a check
    /// that missed it would let a token call it, or a secret be kept.
    #[test]
    fn root_fields_deep_in_fragments_are_seen() {
        let mut text = String::from("mutation { ...F0 }");
        for n in 0..100 {
            text += &format!(
                " fragment F{n} on Mutation {{ ...F{} ... {{ ...F{n} }} }}",
                n + 1
            );
        }
        text += " fragment F100 on Mutation { signIn(email: \"\", password: \"\") { token } }";
        let doc = async_graphql::parser::parse_query(&text).unwrap();
        let (_, set) = selected(&doc, None).unwrap();
        assert_eq!(root_fields(&doc, set), ["signIn"]);
    }
}
