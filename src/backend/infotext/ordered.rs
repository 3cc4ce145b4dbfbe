//! An insertion-ordered map with Python dict assignment semantics: setting an existing key
//! replaces its value in place, a new key goes to the end. A1111's infotext key order depends on
//! exactly this.

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OrderedMap<V> {
    entries: Vec<(String, V)>,
}

impl<V> OrderedMap<V> {
    pub fn new() -> Self {
        OrderedMap { entries: Vec::new() }
    }

    pub fn set(&mut self, key: &str, value: V) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key.to_string(), value)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// `setdefault` without the return: set only when absent.
    pub fn set_default(&mut self, key: &str, value: V) {
        if !self.contains(key) {
            self.entries.push((key.to_string(), value));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn into_vec(self) -> Vec<(String, V)> {
        self.entries
    }
}
