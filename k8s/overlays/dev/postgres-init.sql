-- Run once, by the postgres image's entrypoint, when the data volume is empty.
-- Each service owns its database (the DATABASE_URLs of kustomization.yaml name them).
CREATE DATABASE book;
CREATE DATABASE borrow;
CREATE DATABASE dashboard;
