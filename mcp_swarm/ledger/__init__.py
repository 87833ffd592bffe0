"""The task ledger: task rules, plans, mail, reservations and write scopes. No SQL, no processes."""
