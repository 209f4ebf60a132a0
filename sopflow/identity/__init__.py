"""Who may do what: users with a role (sopflow.principals.Role), their API tokens and browser
sessions (users.py), the CLI that manages them (cli.py), and which tasks and runs a user may see
and act on (access.py). The gateway authenticates with them (sopflow/gateway/auth.py).
"""
