# conf.examples/openai-pool.conf and vllm-fleet.conf pass `nginx -t` with
# the module, once their "# test: NAME" lines point at local paths.

use strict;
use warnings;

use Cwd ();
use File::Path ();
use Test::More;

my $root   = Cwd::abs_path('.');
my $nginx  = $ENV{LLM_NGINX_BIN} // $ENV{TEST_NGINX_BINARY} // '/usr/sbin/nginx';
my $module = Cwd::abs_path($ENV{LLM_MODULE}
                           // 'build/release/ngx_http_llm_gateway_module.so');

sub render {
    my ($name, $dir) = @_;

    my %sub = (
        pid         => "pid $dir/nginx.pid;",
        error_log   => "error_log $dir/error.log warn;",
        load_module => "load_module $module;",
        mime        => 'types { application/json json; }',
        access_log  => "access_log $dir/access.log llm;",
        key_file    => "llm_key_file $dir/llm-keys.txt;",
        server      => 'server 127.0.0.1:9;',
        server1     => 'server 127.0.0.1:11 max_fails=2 fail_timeout=10s;',
        server2     => 'server 127.0.0.1:12 max_fails=2 fail_timeout=10s;',
        server3     => 'server 127.0.0.1:13 weight=2 max_conns=64;',
        secret      => "llm_pool_key batch secret=file:$dir/batch.key",
        listen      => 'listen 127.0.0.1:1;',
    );

    open(my $in, '<', "$root/conf.examples/$name") or die "$name: $!\n";
    my $text = '';

    while (my $l = <$in>) {
        if ($l =~ /^(\s*).*# test: (\w+)\s*$/) {
            die "$name: unknown '# test: $2'\n" unless exists $sub{$2};
            $l = "$1$sub{$2}\n";
        }
        $text .= $l;
    }

    open(my $out, '>', "$dir/nginx.conf") or die "$dir/nginx.conf: $!\n";
    print $out $text;
    close $out;
}

for my $name (qw(openai-pool.conf vllm-fleet.conf)) {
    my $dir = "$root/t/servroot/082-pool-examples/$name";

    File::Path::remove_tree($dir);
    File::Path::make_path("$dir/logs");

    open(my $k, '>', "$dir/batch.key") or die "$dir/batch.key: $!\n";
    print $k "sk-proj-example-batch\n";
    close $k;

    open($k, '>', "$dir/llm-keys.txt") or die "$dir/llm-keys.txt: $!\n";
    print $k "# no client keys yet\n";
    close $k;

    render($name, $dir);

    local $ENV{OPENAI_KEY_A} = 'sk-proj-example-a';
    local $ENV{OPENAI_KEY_B} = 'sk-proj-example-b';

    my $outp = `'$nginx' -t -p '$dir/' -c '$dir/nginx.conf' -e '$dir/error.log' 2>&1`;

    ok($? == 0 && $outp =~ /test is successful/, "$name passes nginx -t")
        or diag($outp);

    unlike($outp, qr/sk-proj-example/, "$name: nginx -t shows no secret");
}

done_testing();
