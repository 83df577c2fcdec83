use matroska_cache::Dependencies;

#[derive(Dependencies)]
#[deps(pk = "article")]
struct Article {
    #[deps(key, skip)]
    id: u32,
}

fn main() {}
