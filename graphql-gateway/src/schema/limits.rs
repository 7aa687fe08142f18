//! Bounds on a query document, checked once when it is parsed (cached documents passed them).
//!
//! - Depth: ordinary selections at most [`MAX_DEPTH`] deep. Introspection (`__schema`,
//!   `__type`) is left out of that count, because the standard introspection query that every
//!   GraphQL tool sends nests `ofType` deeper than any real query needs; the engine's own limit
//!   ([`MAX_INTROSPECTION_DEPTH`]) still bounds it, so 30 nested `ofType` are refused.
//! - Fields and aliases: at most [`MAX_FIELDS`] field selections and [`MAX_ALIASES`] aliases in
//!   the document (OWASP's advice against batching attacks: `__typename` costs nothing in the
//!   complexity count, so thousands of aliases of it would otherwise run).
use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};

/// Deepest ordinary query accepted.
pub const MAX_DEPTH: usize = 10;
/// Deepest document of any kind the engine accepts, introspection included.
pub const MAX_INTROSPECTION_DEPTH: usize = 20;
/// Most field selections in one document.
pub const MAX_FIELDS: usize = 1000;
/// Most aliases in one document.
pub const MAX_ALIASES: usize = 100;

/// A document over one of the bounds, with the message shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    #[error("the query is nested too deep: at most {MAX_DEPTH} levels")]
    Depth,
    #[error("the query selects {0} fields; at most {MAX_FIELDS} are accepted")]
    Fields(usize),
    #[error("the query uses {0} aliases; at most {MAX_ALIASES} are accepted")]
    Aliases(usize),
}

/// Checks `document` against every bound.
///
/// # Errors
/// The first bound exceeded.
pub fn check(document: &ExecutableDocument) -> Result<(), LimitExceeded> {
    let mut counts = Counts::default();
    for (_, operation) in document.operations.iter() {
        counts.add(&operation.node.selection_set.node);
    }
    for fragment in document.fragments.values() {
        counts.add(&fragment.node.selection_set.node);
    }
    if counts.fields > MAX_FIELDS {
        return Err(LimitExceeded::Fields(counts.fields));
    }
    if counts.aliases > MAX_ALIASES {
        return Err(LimitExceeded::Aliases(counts.aliases));
    }
    let mut depths = Depths {
        document,
        fragments: HashMap::new(),
    };
    for (_, operation) in document.operations.iter() {
        if depths.of(&operation.node.selection_set.node) > MAX_DEPTH {
            return Err(LimitExceeded::Depth);
        }
    }
    Ok(())
}

/// Field selections and aliases as written (a fragment counts once, wherever it is spread).
#[derive(Default)]
struct Counts {
    fields: usize,
    aliases: usize,
}

impl Counts {
    fn add(&mut self, set: &SelectionSet) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    self.fields += 1;
                    self.aliases += usize::from(field.node.alias.is_some());
                    self.add(&field.node.selection_set.node);
                }
                Selection::InlineFragment(fragment) => self.add(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
}

/// Depth with fragments inlined, each fragment measured once (a fragment spread many times
/// costs no more), and a cycle (which validation refuses later) counted as nothing.
struct Depths<'a> {
    document: &'a ExecutableDocument,
    fragments: HashMap<&'a str, Option<usize>>,
}

impl<'a> Depths<'a> {
    fn of(&mut self, set: &'a SelectionSet) -> usize {
        let mut deepest = 0;
        for item in &set.items {
            let depth = match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    if name == "__schema" || name == "__type" {
                        1
                    } else {
                        1 + self.of(&field.node.selection_set.node)
                    }
                }
                Selection::InlineFragment(fragment) => self.of(&fragment.node.selection_set.node),
                Selection::FragmentSpread(spread) => self.of_fragment(spread.node.fragment_name.node.as_str()),
            };
            deepest = deepest.max(depth);
        }
        deepest
    }

    fn of_fragment(&mut self, name: &'a str) -> usize {
        match self.fragments.get(name) {
            Some(Some(depth)) => return *depth,
            Some(None) => return 0,
            None => {}
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return 0;
        };
        self.fragments.insert(name, None);
        let depth = self.of(&fragment.node.selection_set.node);
        self.fragments.insert(name, Some(depth));
        depth
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::parse_query;

    use super::*;

    fn checked(query: &str) -> Result<(), LimitExceeded> {
        check(&parse_query(query).unwrap())
    }

    fn nested(levels: usize, leaf: &str) -> String {
        format!("{}{leaf}{}", "{ a ".repeat(levels), " }".repeat(levels))
    }

    #[test]
    fn ordinary_depth_is_bounded_through_fragments() {
        assert_eq!(checked(&format!("query {}", nested(MAX_DEPTH - 1, "{ b }"))), Ok(()));
        assert_eq!(
            checked(&format!("query {}", nested(MAX_DEPTH, "{ b }"))),
            Err(LimitExceeded::Depth)
        );
        let through_fragments = format!(
            "query {{ a {{ ...F }} }} fragment F on T {{ a {{ ...G }} }} fragment G on T {}",
            nested(MAX_DEPTH - 2, "{ b }")
        );
        assert_eq!(checked(&through_fragments), Err(LimitExceeded::Depth));
    }

    #[test]
    fn introspection_is_not_counted_as_ordinary_depth() {
        let deep_type_ref = format!("{{ __schema {{ types {} }} }}", nested(15, "{ name }"));
        assert_eq!(checked(&deep_type_ref), Ok(()));
        assert_eq!(
            checked(&format!("{{ __typename x: a {} }}", nested(MAX_DEPTH - 1, "{ b }"))),
            Err(LimitExceeded::Depth)
        );
    }

    #[test]
    fn cycles_and_repeated_fragments_terminate() {
        assert_eq!(checked("{ ...A } fragment A on Q { ...A a }"), Ok(()));
        let mut bomb = String::from("{ ...F0 }");
        for i in 0..30 {
            bomb.push_str(&format!(
                " fragment F{i} on Q {{ a {{ ...F{} ...F{} }} }}",
                i + 1,
                i + 1
            ));
        }
        bomb.push_str(" fragment F30 on Q { b }");
        assert_eq!(checked(&bomb), Err(LimitExceeded::Depth));
    }

    #[test]
    fn thousands_of_aliases_are_refused() {
        let aliases: String = (0..5000).map(|i| format!("a{i}: __typename ")).collect();
        assert_eq!(checked(&format!("{{ {aliases} }}")), Err(LimitExceeded::Fields(5000)));
        let some: String = (0..=MAX_ALIASES).map(|i| format!("a{i}: __typename ")).collect();
        assert_eq!(
            checked(&format!("{{ {some} }}")),
            Err(LimitExceeded::Aliases(MAX_ALIASES + 1))
        );
    }
}
