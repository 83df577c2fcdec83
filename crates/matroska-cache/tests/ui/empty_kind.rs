use matroska_cache::Dependencies;

#[derive(Dependencies)]
#[deps(id = "")]
struct Article {
    #[deps(key)]
    id: u32,
}

fn main() {}
