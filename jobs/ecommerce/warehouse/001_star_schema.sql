-- The e-commerce warehouse: a star schema of facts referencing dimensions by surrogate keys
-- that PostgreSQL generates (identity columns), KPI tables per window, alerts, late events and
-- refused events. Written by jobs/ecommerce/analytics.toml; read by the dashboard and by SQL:
--   SELECT p.product_id, sum(f.amount_usd) FROM fact_orders f
--   JOIN dim_product p USING (product_key) GROUP BY 1 ORDER BY 2 DESC LIMIT 10;
-- Applied by `eddy warehouse migrate`, once, in order, each file in its own transaction.

-- ---- dimensions: a natural key (unique, looked up by the sinks) and a surrogate key -------------

CREATE TABLE dim_user (
    user_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id text NOT NULL UNIQUE,
    first_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dim_product (
    product_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    product_id text NOT NULL UNIQUE,
    first_seen timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dim_currency (
    currency_key smallint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    currency text NOT NULL UNIQUE CHECK (currency ~ '^[A-Z]{3}$'),
    name text
);

INSERT INTO dim_currency (currency, name) VALUES
    ('USD', 'US dollar'), ('EUR', 'Euro'), ('GBP', 'Pound sterling'), ('JPY', 'Japanese yen');

-- One row per minute that has events; its calendar attributes are derived, never written.
CREATE TABLE dim_time (
    time_key bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    minute timestamp NOT NULL UNIQUE,
    hour smallint GENERATED ALWAYS AS (extract(hour FROM minute)::smallint) STORED,
    day date GENERATED ALWAYS AS (minute::date) STORED,
    day_of_week smallint GENERATED ALWAYS AS (extract(isodow FROM minute)::smallint) STORED,
    month smallint GENERATED ALWAYS AS (extract(month FROM minute)::smallint) STORED,
    year smallint GENERATED ALWAYS AS (extract(year FROM minute)::smallint) STORED
);

-- ---- facts: one row per accepted event (an order: one row per line), late ones included --------

CREATE TABLE fact_clicks (
    event_id text PRIMARY KEY,
    user_key bigint NOT NULL REFERENCES dim_user,
    product_key bigint NOT NULL REFERENCES dim_product,
    time_key bigint NOT NULL REFERENCES dim_time,
    session_id text NOT NULL,
    ts timestamp NOT NULL,
    page text NOT NULL,
    referrer text
);

CREATE TABLE fact_cart (
    event_id text PRIMARY KEY,
    user_key bigint NOT NULL REFERENCES dim_user,
    product_key bigint NOT NULL REFERENCES dim_product,
    time_key bigint NOT NULL REFERENCES dim_time,
    session_id text NOT NULL,
    ts timestamp NOT NULL,
    quantity integer NOT NULL
);

CREATE TABLE fact_orders (
    order_id text NOT NULL,
    line_number integer NOT NULL,
    user_key bigint NOT NULL REFERENCES dim_user,
    product_key bigint NOT NULL REFERENCES dim_product,
    currency_key smallint NOT NULL REFERENCES dim_currency,
    time_key bigint NOT NULL REFERENCES dim_time,
    session_id text NOT NULL,
    ts timestamp NOT NULL,
    quantity integer NOT NULL,
    unit_price numeric(12, 2) NOT NULL,
    amount numeric(14, 2) NOT NULL,
    -- The rate in force at the order's time (NULL if none was known).
    rate_to_usd numeric(12, 6),
    amount_usd numeric(20, 8),
    order_total numeric(14, 2) NOT NULL,
    PRIMARY KEY (order_id, line_number)
);

CREATE INDEX fact_orders_time ON fact_orders (time_key);
CREATE INDEX fact_orders_product ON fact_orders (product_key);

-- ---- KPIs per event-time window, one row per window ---------------------------------------------

CREATE TABLE kpi_revenue_minute (
    window_start timestamp PRIMARY KEY,
    window_end timestamp NOT NULL,
    revenue_usd numeric(20, 8),
    orders bigint NOT NULL,
    units bigint NOT NULL,
    avg_order_value_usd double precision
);

CREATE TABLE kpi_traffic_minute (
    window_start timestamp PRIMARY KEY,
    window_end timestamp NOT NULL,
    events bigint NOT NULL,
    clicks bigint NOT NULL,
    carts bigint NOT NULL,
    purchases bigint NOT NULL,
    active_users bigint NOT NULL,
    active_sessions bigint NOT NULL
);

CREATE TABLE kpi_funnel_5min (
    window_start timestamp PRIMARY KEY,
    window_end timestamp NOT NULL,
    viewed bigint NOT NULL,
    carted bigint NOT NULL,
    purchased bigint NOT NULL,
    view_to_cart double precision,
    cart_to_purchase double precision,
    conversion double precision
);

CREATE TABLE kpi_top_products_5min (
    window_start timestamp NOT NULL,
    window_end timestamp NOT NULL,
    rank integer NOT NULL,
    product_id text NOT NULL,
    revenue_usd numeric(20, 8),
    units bigint NOT NULL,
    PRIMARY KEY (window_start, rank)
);

-- ---- alerts, late events, refused events ----------------------------------------------------------

CREATE TABLE alerts (
    metric text NOT NULL,
    window_start timestamp NOT NULL,
    window_end timestamp NOT NULL,
    observed double precision NOT NULL,
    expected double precision NOT NULL,
    deviation double precision NOT NULL,
    score double precision NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (metric, window_start)
);

CREATE TABLE late_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kpi text NOT NULL,
    event_type text NOT NULL,
    event_id text NOT NULL,
    ts timestamp,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason text NOT NULL,
    event_type text,
    payload text NOT NULL,
    received_at timestamp
);
