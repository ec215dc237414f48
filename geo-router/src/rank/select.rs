//! Picking the best few from the ranked list while spanning enough regions.
//!
//! A client handed relays in one region only loses every ICE path when that region has an
//! outage, so the answer spans `min_regions` regions whenever the eligible relays do; the price
//! is the worst pick of an over-represented region.

use std::cmp::Ordering;

/// Anything that belongs to a region.
pub(super) trait Regional {
    fn region(&self) -> &str;
}

/// One pick: a position in the reordered slice, and whether it displaced a better relay of an
/// already-covered region to add its own region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pick {
    pub(super) position: usize,
    pub(super) for_diversity: bool,
}

/// Picks up to `max_results` of `items`, best first by `cmp` (a total order), spanning
/// `min(min_regions, distinct regions, max_results)` regions.
///
/// Only the best `max_results` are sorted, after an O(n) selection moves them to the front;
/// each region added afterwards costs one O(n) scan. A request asks for a handful out of
/// hundreds or thousands, so this beats sorting everything (and `geoturn route`, which asks for
/// all, pays the full sort it needs).
pub(super) fn pick<T: Regional>(
    items: &mut [T],
    max_results: usize,
    min_regions: usize,
    cmp: impl Fn(&T, &T) -> Ordering,
) -> Vec<Pick> {
    let k = max_results.min(items.len());
    if k == 0 {
        return Vec::new();
    }
    if k < items.len() {
        items.select_nth_unstable_by(k - 1, &cmp);
    }
    if let Some(best) = items.get_mut(..k) {
        best.sort_unstable_by(&cmp);
    }
    let items: &[T] = items;
    let at = |position: usize| items.get(position);
    let region = |position: usize| at(position).map_or("", Regional::region);

    let mut picks: Vec<Pick> = (0..k)
        .map(|position| Pick {
            position,
            for_diversity: false,
        })
        .collect();
    // Few regions are ever covered, so a list beats hashing every relay's region.
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for p in &picks {
        add(&mut counts, region(p.position));
    }
    let target = min_regions.min(k);
    // Each round covers one more region, so at most `target` rounds.
    while counts.len() < target {
        // The best relay of a region not yet covered (never a pick: picks' regions are)...
        let Some(newcomer) = (0..items.len())
            .filter(|&i| count(&counts, region(i)) == 0)
            .min_by(|&a, &b| compare(at(a), at(b), &cmp))
        else {
            break; // every region is covered
        };
        // ...displaces the worst pick whose region keeps another pick.
        let Some(slot) = picks
            .iter()
            .rposition(|p| count(&counts, region(p.position)) > 1)
        else {
            break; // unreachable while counts.len() < k: some region has two picks
        };
        let displaced = picks.remove(slot);
        remove(&mut counts, region(displaced.position));
        add(&mut counts, region(newcomer));
        let slot = picks
            .partition_point(|p| compare(at(p.position), at(newcomer), &cmp) == Ordering::Less);
        picks.insert(
            slot,
            Pick {
                position: newcomer,
                for_diversity: true,
            },
        );
    }
    picks
}

fn compare<T>(a: Option<&T>, b: Option<&T>, cmp: impl Fn(&T, &T) -> Ordering) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => cmp(a, b),
        // Positions come from `0..len`; this arm only keeps the code free of indexing panics.
        _ => a.is_some().cmp(&b.is_some()).reverse(),
    }
}

fn count(counts: &[(&str, usize)], region: &str) -> usize {
    counts
        .iter()
        .find(|(r, _)| *r == region)
        .map_or(0, |(_, n)| *n)
}

fn add<'a>(counts: &mut Vec<(&'a str, usize)>, region: &'a str) {
    match counts.iter_mut().find(|(r, _)| *r == region) {
        Some((_, n)) => *n += 1,
        None => counts.push((region, 1)),
    }
}

fn remove(counts: &mut Vec<(&str, usize)>, region: &str) {
    let Some(i) = counts.iter().position(|(r, _)| *r == region) else {
        return;
    };
    if let Some((_, n)) = counts.get_mut(i)
        && *n > 1
    {
        *n -= 1;
    } else {
        counts.swap_remove(i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (rank, region): the rank is the order `cmp` sorts by.
    #[derive(Debug, Clone, Copy)]
    struct Item(usize, &'static str);

    impl Regional for Item {
        fn region(&self) -> &str {
            self.1
        }
    }

    /// Runs `pick` on the regions given best first, fed in reverse so the selection has work
    /// to do; answers (rank, for_diversity) per pick.
    fn run(regions: &[&'static str], max_results: usize, min_regions: usize) -> Vec<(usize, bool)> {
        let mut items: Vec<Item> = regions
            .iter()
            .enumerate()
            .map(|(i, r)| Item(i, r))
            .rev()
            .collect();
        let picks = pick(&mut items, max_results, min_regions, |a, b| a.0.cmp(&b.0));
        picks
            .iter()
            .map(|p| (items[p.position].0, p.for_diversity))
            .collect()
    }

    #[test]
    fn takes_the_best_when_they_already_span() {
        let picks = run(&["eu", "us", "eu", "us", "eu"], 4, 2);
        assert_eq!(picks, [(0, false), (1, false), (2, false), (3, false)]);
    }

    #[test]
    fn swaps_the_worst_pick_for_the_best_other_region() {
        let picks = run(&["eu", "eu", "eu", "eu", "eu", "us", "us"], 4, 2);
        assert_eq!(picks, [(0, false), (1, false), (2, false), (5, true)]);
    }

    #[test]
    fn three_regions_keep_rank_order() {
        assert_eq!(
            run(&["eu", "eu", "eu", "ap", "us", "us"], 3, 3),
            [(0, false), (3, true), (4, true)]
        );
        assert_eq!(
            run(&["eu", "eu", "eu", "eu", "us", "ap"], 4, 3),
            [(0, false), (1, false), (4, true), (5, true)]
        );
    }

    #[test]
    fn no_more_regions_than_exist_or_fit() {
        assert_eq!(run(&["eu", "eu", "eu"], 2, 2), [(0, false), (1, false)]);
        assert_eq!(run(&["eu", "eu", "us"], 1, 2), [(0, false)]);
        assert!(run(&[], 4, 2).is_empty());
        assert_eq!(run(&["eu", "us"], usize::MAX, 2), [(0, false), (1, false)]);
    }

    #[test]
    fn diversity_off() {
        assert_eq!(run(&["eu", "eu", "us"], 2, 1), [(0, false), (1, false)]);
        assert_eq!(run(&["eu", "eu", "us"], 2, 0), [(0, false), (1, false)]);
    }
}
