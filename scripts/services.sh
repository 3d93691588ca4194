#!/usr/bin/env bash
# Start the local services the integration tests use, if they are not running already.
# Commands from the machine notes; each is a no-op when the service answers.
set -u
wait_for() { # name, command
  for _ in $(seq 1 60); do eval "$2" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "error: $1 did not come up" >&2; return 1
}
if ! pg_isready -h 127.0.0.1 -p 5432 >/dev/null 2>&1; then
  echo "starting PostgreSQL"; pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  wait_for PostgreSQL "pg_isready -h 127.0.0.1 -p 5432" || exit 1
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping" || exit 1
fi
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  echo "starting RabbitMQ"; rabbitmq-server -detached || true
  wait_for RabbitMQ "(exec 3<>/dev/tcp/127.0.0.1/5672)" || exit 1
fi
echo "services: PostgreSQL, Redis, RabbitMQ up"
