-- The demo's sample application database: a sequence, a view, a function, an index,
-- foreign keys and a few thousand rows. Also used by the tests.
CREATE SEQUENCE invoice_no START 1000;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text UNIQUE);
CREATE TABLE products (id serial PRIMARY KEY, sku text NOT NULL UNIQUE, price numeric(10,2) NOT NULL);
CREATE TABLE orders (
  id serial PRIMARY KEY,
  customer_id int NOT NULL REFERENCES customers(id),
  product_id int NOT NULL REFERENCES products(id),
  qty int NOT NULL CHECK (qty > 0),
  invoice bigint NOT NULL DEFAULT nextval('invoice_no'),
  note text,
  placed_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);
CREATE INDEX orders_customer_idx ON orders (customer_id, placed_at);
CREATE FUNCTION order_total(o orders) RETURNS numeric LANGUAGE sql STABLE
  AS $$ SELECT o.qty * p.price FROM products p WHERE p.id = o.product_id $$;
CREATE VIEW customer_totals AS
  SELECT c.id, c.name, sum(order_total(o)) AS total FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name;
INSERT INTO customers (name, email) SELECT 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, 500) g;
INSERT INTO products (sku, price) SELECT 'SKU-' || g, (g % 97) + 0.99 FROM generate_series(1, 200) g;
INSERT INTO orders (customer_id, product_id, qty, note, placed_at)
  SELECT (g % 500) + 1, (g % 200) + 1, (g % 7) + 1, 'note ' || g, '2026-01-01'::timestamptz + g * interval '1 minute'
  FROM generate_series(1, 4000) g;
