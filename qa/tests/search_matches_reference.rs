//! Benchmark 2's generator and queries at a small scale: the fast search
//! must return exactly the pages of a brute-force reference of the
//! documented ranking (filter everything, sort by price ascending, provider
//! reputation descending, id ascending, then offset/limit).

use dc_qa::world::{self, Reference, WorldConfig};

const T0: u64 = 1_700_000_000_000_000_000;

fn check(config: WorldConfig, queries: usize) -> (usize, usize, u64) {
    let w = world::build(&config, |_| {}).expect("world");
    assert_eq!(w.ledger.stats().offerings as usize, config.offerings);
    let reference = Reference::new(&w);
    let qs = world::queries(&w, queries, config.seed);
    let (mut nonempty, mut full, mut offers) = (0, 0, 0);
    for (i, q) in qs.iter().enumerate() {
        let fast = w.ledger.search(q).expect("search");
        let slow = reference.search(q);
        assert_eq!(fast, slow, "query {i} differs: {q:?}");
        if !fast.offers.is_empty() {
            nonempty += 1;
        }
        if fast.offers.len() == q.limit.unwrap_or(20) as usize {
            full += 1;
        }
        offers += fast.offers.len() as u64;
    }
    (nonempty, full, offers)
}

#[test]
fn fast_search_returns_exactly_the_reference_pages() {
    let config = WorldConfig {
        providers: 20,
        nodes_per_provider: 10,
        offerings: 2_000,
        seed: 7,
        price_step_e9s: 1_000_000,
        time_ns: T0,
    };
    let (nonempty, full, offers) = check(config, 50);
    // The query set is not degenerate: most queries match something, some fill a page.
    assert!(
        nonempty >= 25,
        "only {nonempty} of 50 queries matched anything"
    );
    assert!(full >= 5, "only {full} of 50 queries filled a page");
    assert!(offers > 500, "only {offers} offers in all");
}

#[test]
fn ties_on_price_are_ranked_by_reputation_then_id() {
    // Coarse prices: many offerings share one, so the tie-breaks decide pages.
    let config = WorldConfig {
        providers: 12,
        nodes_per_provider: 3,
        offerings: 1_500,
        seed: 11,
        price_step_e9s: 200_000_000,
        time_ns: T0,
    };
    let (nonempty, _, _) = check(config, 50);
    assert!(nonempty >= 25);
}

#[test]
fn generator_is_deterministic() {
    let config = WorldConfig {
        providers: 5,
        nodes_per_provider: 2,
        offerings: 200,
        seed: 3,
        price_step_e9s: 1_000_000,
        time_ns: T0,
    };
    let a = world::build(&config, |_| {}).expect("world");
    let b = world::build(&config, |_| {}).expect("world");
    assert_eq!(a.ledger.state_digest(), b.ledger.state_digest());
    assert_eq!(world::queries(&a, 30, 3), world::queries(&b, 30, 3));
}
