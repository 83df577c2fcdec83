//! `pk:<model>:<key>[:<key>...]`: an entity by its primary key (the original's
//! `dep.PrimaryKey`), composite keys included.

use std::fmt::Write as _;

use super::{Dep, DepKind};

/// A primary-key value: one column (integers, strings, `bool`, `char`) or a tuple of up to
/// four columns for composite keys.
pub trait PrimaryKey {
    /// Appends one text per key column to `out`.
    fn columns(&self, out: &mut Vec<String>);
}

macro_rules! scalar_key {
    ($($t:ty),*) => {$(
        impl PrimaryKey for $t {
            fn columns(&self, out: &mut Vec<String>) {
                let mut s = String::new();
                let _ = write!(s, "{self}");
                out.push(s);
            }
        }
    )*};
}
scalar_key!(
    i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, bool, char, str, String
);

impl<T: PrimaryKey + ?Sized> PrimaryKey for &T {
    fn columns(&self, out: &mut Vec<String>) {
        (**self).columns(out);
    }
}

macro_rules! tuple_key {
    ($($name:ident),+) => {
        impl<$($name: PrimaryKey),+> PrimaryKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn columns(&self, out: &mut Vec<String>) {
                let ($($name,)+) = self;
                $($name.columns(out);)+
            }
        }
    };
}
tuple_key!(A);
tuple_key!(A, B);
tuple_key!(A, B, C);
tuple_key!(A, B, C, D);

/// A dependency on an entity by model name and primary key: `pk:article:1`, or
/// `pk:order_line:7:2` for a composite key `(7, 2)`.
///
/// ```
/// use matroska_cache::dep;
///
/// assert_eq!(dep::pk("article", 1).to_string(), "pk:article:1");
/// assert_eq!(dep::pk("order_line", (7, "b")).to_string(), "pk:order_line:7:b");
/// ```
pub fn pk(model: &str, key: impl PrimaryKey) -> Dep {
    let mut columns = Vec::new();
    key.columns(&mut columns);
    pk_columns(model, &columns)
}

/// [`pk`] from columns already rendered by [`PrimaryKey::columns`] (for the derive macro).
#[doc(hidden)]
pub fn pk_columns(model: &str, columns: &[String]) -> Dep {
    Dep::from_parts(
        DepKind::Pk,
        std::iter::once(model).chain(columns.iter().map(String::as_str)),
    )
}

/// An application type stored in a database table: its instances name their own dependency
/// (the original's `PrimaryKey.from_instance`).
///
/// ```
/// use matroska_cache::dep::{self, Entity};
///
/// struct OrderLine { order_id: u64, line: u32 }
///
/// impl Entity for OrderLine {
///     const MODEL: &'static str = "order_line";
///     type Key<'a> = (u64, u32);
///     fn primary_key(&self) -> (u64, u32) { (self.order_id, self.line) }
/// }
///
/// let line = OrderLine { order_id: 7, line: 2 };
/// assert_eq!(line.dep(), dep::pk("order_line", (7, 2)));
/// ```
pub trait Entity {
    /// The model or table name.
    const MODEL: &'static str;

    /// The primary key's type: a scalar or a tuple of columns (it may borrow from the entity).
    type Key<'a>: PrimaryKey
    where
        Self: 'a;

    /// This instance's primary key.
    fn primary_key(&self) -> Self::Key<'_>;

    /// The dependency on this instance: `pk:<MODEL>:<key>`.
    fn dep(&self) -> Dep {
        pk(Self::MODEL, self.primary_key())
    }
}
