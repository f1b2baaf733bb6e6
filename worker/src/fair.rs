//! Taking turns: work of many tenants (feeds, webhook deliveries) is done
//! one owner after another, so one owner's backlog of slow work does not
//! hold back everyone else's.

/// `items` reordered so that their owners take turns (each one's first,
/// then each one's second…), each owner's kept in order.
pub fn in_turn<T, K: Eq + std::hash::Hash>(items: Vec<T>, owner: impl Fn(&T) -> K) -> Vec<T> {
    let mut queues: Vec<std::collections::VecDeque<T>> = Vec::new();
    let mut slot: std::collections::HashMap<K, usize> = Default::default();
    for item in items {
        let i = *slot.entry(owner(&item)).or_insert_with(|| {
            queues.push(Default::default());
            queues.len() - 1
        });
        queues[i].push_back(item);
    }
    let mut out = Vec::new();
    while queues.iter().any(|q| !q.is_empty()) {
        for q in &mut queues {
            out.extend(q.pop_front());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::in_turn;

    #[test]
    fn owners_take_turns_each_in_order() {
        let items = vec![("a", 1), ("a", 2), ("a", 3), ("b", 1), ("c", 1), ("b", 2)];
        assert_eq!(
            in_turn(items, |(owner, _)| *owner),
            [("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("a", 3)]
        );
        assert!(in_turn(Vec::<(u8, u8)>::new(), |x| x.0).is_empty());
    }
}
