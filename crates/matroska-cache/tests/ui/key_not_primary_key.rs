use matroska_cache::Dependencies;

struct Uuid([u8; 16]);

#[derive(Dependencies)]
#[deps(pk = "article")]
struct Article {
    #[deps(key)]
    shard: u8,
    #[deps(key)]
    id: Uuid,
}

fn main() {}
