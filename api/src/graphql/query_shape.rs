//! Refuses a query whose fragments, spread within fragments again and
//! again, expand past a limit, before the engine walks it. The engine's
//! own checks (recursion depth, then depth and complexity) expand every
//! spread anew: thirty fragments each spreading the next eight times are
//! 2 KB of text and 8^29 steps, a core lost for good, without a login.
//! Here each fragment's size is counted once. The validator also walks
//! every fragment definition from itself, used or not (a chain of ten
//! thousand unused fragments each spreading the next is quadratic work
//! and as deep a recursion), so each definition counts as a root too.

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Name, Pos, Positioned, Request, ServerError, ServerResult};
use std::collections::HashMap;
use std::sync::Arc;

/// Selections a query may expand to, fragments spread in place.
pub const MAX_EXPANDED: usize = 10_000;

/// Nesting walked at most (the engine refuses more than 32 anyway).
const MAX_NESTING: usize = 64;

pub struct ExpansionLimit;

impl ExtensionFactory for ExpansionLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ExpansionLimit)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for ExpansionLimit {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Parsed here once; the engine then uses this document.
        let doc = request.parsed_query()?;
        if expanded(doc, MAX_EXPANDED).is_none() {
            return Err(ServerError::new(
                format!(
                    "the query expands to more than {MAX_EXPANDED} selections once its fragments are spread; simplify it"
                ),
                Some(Pos::default()),
            ));
        }
        next.run(ctx, request).await
    }
}

/// How many selections a walk of `doc` from each operation and each
/// fragment definition meets with every fragment spread in place, or None
/// when more than `max` (or its fragments spread themselves).
pub fn expanded(doc: &ExecutableDocument, max: usize) -> Option<usize> {
    let mut walk = Walk {
        doc,
        max,
        sizes: HashMap::new(),
    };
    let mut total = 0usize;
    // Operations first, so the nesting limit counts from them.
    for (_, op) in doc.operations.iter() {
        total = total
            .checked_add(walk.set(&op.node.selection_set, 0)?)
            .filter(|n| *n <= max)?;
    }
    for name in doc.fragments.keys() {
        total = total
            .checked_add(walk.fragment(name, 0)?)
            .filter(|n| *n <= max)?;
    }
    Some(total)
}

struct Walk<'a> {
    doc: &'a ExecutableDocument,
    max: usize,
    /// Fragment sizes and depths known; None while one is being counted
    /// (a cycle).
    sizes: HashMap<&'a Name, Option<Shape>>,
}

/// A selection set's size (selections, fragments spread in place) and
/// depth (nesting below it, through fragments too).
#[derive(Clone, Copy)]
struct Shape {
    size: usize,
    depth: usize,
}

impl<'a> Walk<'a> {
    /// `set`'s shape, or None past the limits. `nesting` bounds the walk's
    /// own recursion; the depth, counted from the leaves and kept with
    /// each fragment, bounds every fragment's nesting whatever order the
    /// fragments are met in.
    fn set(&mut self, set: &'a Positioned<SelectionSet>, nesting: usize) -> Option<usize> {
        self.shape(set, nesting).map(|s| s.size)
    }

    fn shape(&mut self, set: &'a Positioned<SelectionSet>, nesting: usize) -> Option<Shape> {
        if nesting > MAX_NESTING {
            return None;
        }
        let mut out = Shape { size: 0, depth: 0 };
        for item in &set.node.items {
            // Every selection counts one, a spread and an inline fragment
            // too: the count bounds the steps of any walk that spreads
            // fragments anew, even of fragments that are empty or unknown.
            let below = match &item.node {
                Selection::Field(f) => self.shape(&f.node.selection_set, nesting + 1)?,
                Selection::InlineFragment(f) => self.shape(&f.node.selection_set, nesting + 1)?,
                Selection::FragmentSpread(s) => {
                    self.fragment_shape(&s.node.fragment_name.node, nesting + 1)?
                }
            };
            out.size = out
                .size
                .checked_add(1 + below.size)
                .filter(|n| *n <= self.max)?;
            out.depth = out.depth.max(1 + below.depth);
        }
        (out.depth <= MAX_NESTING).then_some(out)
    }

    fn fragment(&mut self, name: &'a Name, nesting: usize) -> Option<usize> {
        self.fragment_shape(name, nesting).map(|s| s.size)
    }

    fn fragment_shape(&mut self, name: &'a Name, nesting: usize) -> Option<Shape> {
        match self.sizes.get(name) {
            Some(Some(s)) => return Some(*s),
            Some(None) => return None, // spreads itself
            None => {}
        }
        // An unknown fragment is the validator's to refuse.
        let Some(f) = self.doc.fragments.get(name) else {
            return Some(Shape { size: 0, depth: 0 });
        };
        self.sizes.insert(name, None);
        let s = self.shape(&f.node.selection_set, nesting)?;
        self.sizes.insert(name, Some(s));
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size(q: &str) -> Option<usize> {
        expanded(
            &async_graphql::parser::parse_query(q).unwrap(),
            MAX_EXPANDED,
        )
    }

    #[test]
    fn fragments_count_where_they_are_spread() {
        assert_eq!(size("{ a b { c d } }"), Some(4));
        // 7 from the operation, 2 from F's own definition.
        assert_eq!(
            size("{ ...F x: a ...F } fragment F on Q { b { c } }"),
            Some(9)
        );
        assert_eq!(size("{ ... on Q { a } }"), Some(2));
    }

    #[test]
    fn fan_out_and_cycles_are_refused_at_once() {
        let mut q = String::from("query { ...F1 }");
        for i in 1..30 {
            q.push_str(&format!(
                " fragment F{i} on Q {{ {} }}",
                format!("...F{} ", i + 1).repeat(8)
            ));
        }
        q.push_str(" fragment F30 on Q { __typename }");
        assert_eq!(size(&q), None);
        assert_eq!(
            size("{ ...A } fragment A on Q { ...B } fragment B on Q { ...A }"),
            None
        );
        // Fragments that end in an unknown one (or an empty selection) are
        // no way around it: the engine walks every spread all the same.
        let unknown = q.replace(
            "fragment F30 on Q { __typename }",
            "fragment F30 on Q { ...Nope }",
        );
        assert_eq!(size(&unknown), None);
    }

    #[test]
    fn fragments_no_operation_uses_count_too() {
        // A chain of unused fragments, each spreading the next.
        let mut q = String::from("{ __typename }");
        for i in 0..5_000 {
            q.push_str(&format!(" fragment F{i} on Q {{ ...F{} }}", i + 1));
        }
        assert_eq!(size(&q), None);
        // Unused fragments each spreading one wide fragment.
        let wide = (0..200).map(|i| format!("a{i}: a")).collect::<Vec<_>>();
        let mut q = format!("{{ __typename }} fragment W on Q {{ {} }}", wide.join(" "));
        for i in 0..60 {
            q.push_str(&format!(" fragment U{i} on Q {{ ...W }}"));
        }
        assert_eq!(size(&q), None);
        // A few unused fragments within reason pass (the validator refuses
        // them on its own, with its own message).
        assert_eq!(size("{ a } fragment U on Q { b c }"), Some(3));
    }

    #[test]
    fn a_chain_of_unused_fragments_is_refused_whatever_order_it_is_met_in() {
        // 100 fragments, each spreading the next: 100 deep, ~5,000 in all.
        // Refused every time, though the fragments' order in the document's
        // map changes from one parse to the next.
        let mut q = String::from("{ __typename }");
        for i in 0..100 {
            q.push_str(&format!(" fragment F{i} on Q {{ ...F{} }}", i + 1));
        }
        for _ in 0..20 {
            assert_eq!(size(&q), None);
        }
        // Shallow enough, it passes.
        let mut q = String::from("{ __typename }");
        for i in 0..20 {
            q.push_str(&format!(" fragment F{i} on Q {{ ...F{} }}", i + 1));
        }
        assert!(size(&q).is_some());
    }
}
