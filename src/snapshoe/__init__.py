"""SnapShoe: a platform for limited-edition sneaker drops."""
