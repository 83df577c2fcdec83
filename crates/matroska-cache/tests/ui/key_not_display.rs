use matroska_cache::Dependencies;

struct Uuid([u8; 16]);

#[derive(Dependencies)]
#[deps(id = "article")]
struct Article {
    #[deps(key)]
    id: Uuid,
}

fn main() {}
