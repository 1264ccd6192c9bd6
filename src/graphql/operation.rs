//! The root fields an operation of a parsed document selects, through
//! fragment spreads and inline fragments: what the scope check and the
//! `Idempotency-Key` gate look at before anything executes.
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

/// Fragments followed at most this deep (validation refuses cycles later;
/// this keeps a cyclic or deep document from costing anything here).
const MAX_FRAGMENT_DEPTH: usize = 16;

/// The names of the root fields `selection_set` selects (with repeats),
/// `__typename` and the other introspection fields included. A spread
/// of an unknown fragment adds nothing (validation refuses it).
pub fn root_fields<'a>(
    doc: &'a ExecutableDocument,
    selection_set: &'a SelectionSet,
) -> Vec<&'a str> {
    let mut names = Vec::new();
    collect(doc, selection_set, 0, &mut names);
    names
}

fn collect<'a>(
    doc: &'a ExecutableDocument,
    selection_set: &'a SelectionSet,
    depth: usize,
    names: &mut Vec<&'a str>,
) {
    if depth > MAX_FRAGMENT_DEPTH {
        return;
    }
    for selection in &selection_set.items {
        match &selection.node {
            Selection::Field(field) => names.push(field.node.name.node.as_str()),
            Selection::InlineFragment(fragment) => {
                collect(doc, &fragment.node.selection_set.node, depth + 1, names)
            }
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    collect(doc, &fragment.node.selection_set.node, depth + 1, names);
                }
            }
        }
    }
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
}
