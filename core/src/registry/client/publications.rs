//! The publications of a stored client as a list: [`Publications`] and its iterator.

use super::{Body, Client, Published};
use crate::model::Service;
use std::sync::Arc;

/// The publications of a stored client, sorted by service: indexable, iterable.
#[derive(Clone, Copy)]
pub struct Publications<'a>(pub(super) &'a Body);

impl<'a> Publications<'a> {
    /// Number of publications.
    #[inline]
    pub fn len(&self) -> usize {
        match self.0 {
            Body::One(_) => 1,
            Body::Many(v) => v.len(),
        }
    }
    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Publication `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&'a Published> {
        match self.0 {
            Body::One(p) => (i == 0).then_some(p),
            Body::Many(v) => v.get(i).map(|c| c.single()),
        }
    }
    /// The only publication, if there is exactly one.
    #[inline]
    pub fn only(&self) -> Option<&'a Published> {
        match self.0 {
            Body::One(p) => Some(p),
            Body::Many(v) => match &v[..] {
                [c] => Some(c.single()),
                _ => None,
            },
        }
    }
    /// Every publication, in order.
    #[inline]
    pub fn iter(&self) -> PublicationsIter<'a> {
        PublicationsIter(match self.0 {
            Body::One(p) => IterRepr::One(Some(p)),
            Body::Many(v) => IterRepr::Many(v.iter()),
        })
    }
    /// Binary search by `f` (the publications are sorted by service), as
    /// `slice::binary_search_by` does.
    pub fn binary_search_by(
        &self,
        mut f: impl FnMut(&'a Published) -> std::cmp::Ordering,
    ) -> Result<usize, usize> {
        match self.0 {
            Body::One(p) => match f(p) {
                std::cmp::Ordering::Equal => Ok(0),
                std::cmp::Ordering::Less => Err(1),
                std::cmp::Ordering::Greater => Err(0),
            },
            Body::Many(v) => v.binary_search_by(|c| f(c.single())),
        }
    }
    /// The place of `service`'s publication, or where it would go.
    pub fn find(&self, service: &Service) -> Result<usize, usize> {
        self.binary_search_by(|p| p.service.cmp(service))
    }
}

impl std::ops::Index<usize> for Publications<'_> {
    type Output = Published;
    fn index(&self, i: usize) -> &Published {
        match self.get(i) {
            Some(p) => p,
            None => panic!("publication {i} of {}", self.len()),
        }
    }
}

impl<'a> IntoIterator for Publications<'a> {
    type Item = &'a Published;
    type IntoIter = PublicationsIter<'a>;
    fn into_iter(self) -> PublicationsIter<'a> {
        self.iter()
    }
}

impl std::fmt::Debug for Publications<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of [`Publications`].
#[derive(Clone)]
pub struct PublicationsIter<'a>(IterRepr<'a>);

#[derive(Clone)]
enum IterRepr<'a> {
    One(Option<&'a Published>),
    Many(std::slice::Iter<'a, Arc<Client>>),
}

impl<'a> Iterator for PublicationsIter<'a> {
    type Item = &'a Published;
    #[inline]
    fn next(&mut self) -> Option<&'a Published> {
        match &mut self.0 {
            IterRepr::One(p) => p.take(),
            IterRepr::Many(it) => it.next().map(|c| c.single()),
        }
    }
    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            IterRepr::One(p) => usize::from(p.is_some()),
            IterRepr::Many(it) => it.len(),
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for PublicationsIter<'_> {}
