-- What a bad deploy does to the sample database: drops a view and a column, deletes rows,
-- zeroes prices, resets a sequence, adds a table. Also used by the tests.
DROP VIEW customer_totals;
ALTER TABLE orders DROP COLUMN note;
DELETE FROM orders WHERE id % 3 = 0;
UPDATE products SET price = 0;
SELECT setval('invoice_no', 1);
CREATE TABLE shiny_new_feature (id int);
