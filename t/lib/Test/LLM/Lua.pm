package Test::LLM::Lua;

# The module's Lua scripts, taken from the C source, for tests that run
# them in redis-server itself (t/084, t/092, t/097): each script is its C
# string literals with the shared chunks (#define NGX_HTTP_LLM_..LUA_X)
# put in where it names them.
#
#   my %lua = lua_scripts('src/ngx_http_llm_rstore_lua.c', '',
#                         qw(admit settle));
#   my $port = script_redis_port();      # or the file is skipped
#   my $out = redis_out($port, 'EVAL', $lua{settle}, ...);

use strict;
use warnings;

use Exporter 'import';
our @EXPORT = qw(lua_scripts redis_out script_redis_port redis_now_ms);


# C string literals, escapes undone
sub literals {
    my ($text) = @_;
    my $out = '';
    while ($text =~ /"((?:[^"\\]|\\.)*)"/g) {
        (my $s = $1) =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
        $out .= $s;
    }
    return $out;
}


# FILE's scripts ngx_http_llm_PREFIXlua_NAME, by NAME
sub lua_scripts {
    my ($file, $prefix, @names) = @_;

    my $src = do {
        open(my $fh, '<', $file) or die "$file: $!";
        local $/;
        <$fh>;
    };

    my %chunk;
    while ($src =~ /#define (NGX_HTTP_LLM_\w*LUA_\w+)\s*\\\n(.*?[^\\])\n\n/sg)
    {
        $chunk{$1} = literals($2);
    }

    my %lua;
    for my $name (@names) {
        my ($body) = $src =~ /ngx_http_llm_${prefix}lua_$name\[\] =\n(.*?);\n/s
            or die "no script $name in $file";
        $lua{$name} = join '', map {
            /^(NGX_HTTP_LLM_\w*LUA_\w+)$/
                ? ($chunk{$1} // die "no chunk $1 in $file")
                : literals($_)
        } split /\n/, $body;
    }

    return %lua;
}


# what redis-cli prints for a command, trailing space gone
sub redis_out {
    my ($port, @args) = @_;
    open(my $fh, '-|', 'redis-cli', '-p', $port, @args) or die $!;
    local $/;
    my $out = <$fh>;
    close $fh;
    $out =~ s/\s+\z//;
    return $out;
}


# the Redis of ./ngx_module test (TEST_NGINX_REDIS_PORT, else 6399): its
# port; the whole file is skipped when nothing answers there
sub script_redis_port {
    my $port = $ENV{TEST_NGINX_REDIS_PORT} || 6399;
    if ((`redis-cli -p $port PING 2>/dev/null` // '') !~ /PONG/) {
        Test::More::plan(skip_all => "no Redis on port $port");
    }
    return $port;
}


# Redis's clock (TIME), in ms
sub redis_now_ms {
    my ($port) = @_;
    my ($s, $us) = split /\n/, redis_out($port, 'TIME');
    return $s * 1000 + int($us / 1000);
}


1;
